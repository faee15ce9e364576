//! Admission points: where connections and requests meet the limiter, as the integration that
//! admits them declares it ([`AdmissionPoint`]), and the handle it admits through
//! ([`Checkpoint`]), with the counters kept for each point.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use super::gate::Route;
use super::log::{Every, EVENT_LOG_PERIOD};
use super::{stripes, ConnPermit, Kind, Limiter, RequestPermit};
use crate::key::ClientKey;
use crate::keys::RequestKey;
use crate::reason::{ReasonInfo, RejectReason, Rejected};

/// Where connections or requests meet the limiter: a name for stats, logs and metric labels,
/// what the point counts, and what it may refuse or close on its own.
///
/// The limiter knows no admission point by name: each integration declares its own, and passes
/// it in when it starts admitting ([`Limiter::checkpoint`]). This crate's points are
/// `listener` ([`ConnLimitListener`](crate::ConnLimitListener), connections), `make_service` and
/// `request_layer` (the two levels of [`ConnLimitLayer`](crate::ConnLimitLayer)), and
/// [`DIRECT`](AdmissionPoint::DIRECT), your own calls to [`Limiter::try_acquire`] and the other
/// `try_acquire*` methods.
///
/// A point may refuse for reasons of its own before the limiter can decide (the listener: no IP
/// peer, an untrusted or late PROXY header), and close admitted connections early (the
/// listener's deadlines); it lists them here, so their counts appear in [`Stats`](crate::Stats)
/// from the start.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct AdmissionPoint {
    name: &'static str,
    connections: bool,
    requests: bool,
    refusals: &'static [&'static ReasonInfo],
    closes: &'static [&'static str],
}

impl AdmissionPoint {
    /// Your own calls to the limiter: connections and requests.
    pub(crate) const DIRECT: AdmissionPoint = AdmissionPoint {
        name: "direct",
        connections: true,
        requests: true,
        refusals: &[],
        closes: &[],
    };

    /// A point named `name` that admits connections.
    pub(crate) const fn connections(name: &'static str) -> Self {
        AdmissionPoint {
            name,
            connections: true,
            requests: false,
            refusals: &[],
            closes: &[],
        }
    }

    /// A point named `name` that admits requests.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) const fn requests(name: &'static str) -> Self {
        AdmissionPoint {
            connections: false,
            requests: true,
            ..Self::connections(name)
        }
    }

    /// The same point, refusing for `reasons` of its own besides the limiter's.
    pub(crate) const fn refusing(self, reasons: &'static [&'static ReasonInfo]) -> Self {
        AdmissionPoint {
            refusals: reasons,
            ..self
        }
    }

    /// The same point, closing admitted connections early for `reasons` (snake_case names).
    pub(crate) const fn closing(self, reasons: &'static [&'static str]) -> Self {
        AdmissionPoint {
            closes: reasons,
            ..self
        }
    }

    /// The point's stable name, for log fields and metric labels.
    pub(crate) const fn name(&self) -> &'static str {
        self.name
    }

    /// Whether the point admits connections.
    #[cfg_attr(not(any(feature = "metrics", feature = "admin")), allow(dead_code))]
    pub(crate) const fn counts_connections(&self) -> bool {
        self.connections
    }

    /// Whether the point admits requests.
    #[cfg_attr(not(any(feature = "metrics", feature = "admin")), allow(dead_code))]
    pub(crate) const fn counts_requests(&self) -> bool {
        self.requests
    }

    /// Why the point may close an admitted connection early.
    pub(crate) const fn closes(&self) -> &'static [&'static str] {
        self.closes
    }

    /// Where `reason` is counted in the point's refusal counters: the limiter's reasons first,
    /// then the point's own.
    fn refusal_index(&self, reason: &ReasonInfo) -> Option<usize> {
        let own = self.refusals.iter().position(|r| *r == reason)?;
        Some(RejectReason::ALL.len() + own)
    }

    /// Every reason the point's refusal counters count, in order.
    pub(super) fn all_refusals(&self) -> impl Iterator<Item = &'static ReasonInfo> {
        RejectReason::ALL
            .iter()
            .map(|r| r.info())
            .chain(self.refusals.iter().copied())
    }
}

/// A limiter as one admission point sees it: everything admitted, refused and closed through it
/// is counted under the point; see [`Limiter::checkpoint`]. Cloning it is as cheap as cloning
/// the [`Limiter`].
#[derive(Clone)]
pub(crate) struct Checkpoint {
    limiter: Limiter,
    point: PointId,
}

impl Checkpoint {
    /// The limiter this checkpoint admits through.
    pub(crate) fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// The admission point everything here is counted under.
    pub(crate) fn point(&self) -> &'static AdmissionPoint {
        self.limiter.shared.tallies.points.get(self.point).point
    }

    /// [`Limiter::try_acquire`], counted under this point.
    ///
    /// # Panics
    ///
    /// When the point does not [admit connections](AdmissionPoint::counts_connections).
    pub(crate) fn try_acquire(&self, ip: IpAddr) -> Result<ConnPermit, Rejected> {
        self.expect(Kind::Connection);
        self.limiter.connection_permit(ip, self.point)
    }

    /// [`Limiter::try_acquire_request_to`], counted under this point.
    ///
    /// # Panics
    ///
    /// When the point does not [admit requests](AdmissionPoint::counts_requests).
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn try_acquire_request_to(
        &self,
        ip: IpAddr,
        method: &str,
        path: &str,
    ) -> Result<RequestPermit, Rejected> {
        self.expect(Kind::Request);
        self.limiter
            .request_permit(ip, Some(Route { method, path }), self.point)
    }

    /// [`Limiter::try_acquire_request_as`], counted at this point.
    ///
    /// # Panics
    ///
    /// When the point does not [admit requests](AdmissionPoint::counts_requests).
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn try_acquire_request_as(
        &self,
        ip: IpAddr,
        key: &RequestKey,
        method: &str,
        path: &str,
    ) -> Result<RequestPermit, Rejected> {
        self.expect(Kind::Request);
        self.limiter
            .keyed_request_permit(ip, key, Some(Route { method, path }), self.point)
    }

    /// Panics unless the point admits what is asked of it.
    fn expect(&self, kind: Kind) {
        let point = self.point();
        let admits = match kind {
            Kind::Connection => point.connections,
            Kind::Request => point.requests,
        };
        assert!(
            admits,
            "admission point {:?} does not admit {}s",
            point.name,
            kind.as_str()
        );
    }

    /// Counts and logs a connection refused here for `reason`, one of the point's own, before
    /// the limiter could decide; `client` is the peer, when known. Returns whether it is the
    /// first refusal for `reason` here, so that a misconfiguration can be logged loudly once.
    ///
    /// # Panics
    ///
    /// When `reason` is not one of the [refusals](AdmissionPoint::refusals) the point declares.
    #[cfg_attr(not(feature = "proxy-protocol"), allow(dead_code))]
    pub(crate) fn refuse_connection(
        &self,
        reason: &'static ReasonInfo,
        client: Option<IpAddr>,
    ) -> bool {
        self.refuse(Kind::Connection, reason, client)
    }

    /// Counts a request that the trusted proxy `proxy` sent without naming a usable client
    /// (`refused`, or counted under the proxy's own address), and logs it at warn, at most once
    /// every 10 seconds for the limiter: a request the layer cannot attribute is never waved
    /// through, and an operator must hear of it.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn note_unidentified(&self, proxy: IpAddr, refused: bool) {
        let counters = &self.limiter.shared.counters;
        let count = counters.unidentified.fetch_add(1, Ordering::Relaxed) + 1;
        if counters
            .unidentified_logged
            .due(super::log::EVENT_LOG_PERIOD)
        {
            let fate = if refused {
                "refused"
            } else {
                "counted under the proxy's own address"
            };
            tracing::warn!(
                %proxy,
                point = %self.point().name(),
                unidentified_requests = count,
                "a trusted proxy sent a request naming no usable client: {fate} (set the client \
                 address header on every proxy route)"
            );
        }
    }

    /// Counts and logs a `kind` refused here for `reason`; see
    /// [`refuse_connection`](Checkpoint::refuse_connection).
    pub(crate) fn refuse(
        &self,
        kind: Kind,
        reason: &'static ReasonInfo,
        client: Option<IpAddr>,
    ) -> bool {
        let point = self.point();
        let Some(index) = point.refusal_index(reason) else {
            panic!(
                "{:?} is not one of the refusals admission point {:?} declares",
                reason.name(),
                point.name()
            );
        };
        let key = client.map(|ip| self.limiter.key_for(ip));
        self.limiter
            .refused(kind, self.point, index, reason, key.as_ref());
        let counters = self.limiter.shared.tallies.points.get(self.point);
        !counters.seen[index].swap(true, Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("point", &self.point().name())
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// The handle `point` admits through: what it admits, refuses and closes is counted under
    /// `point` in [`Stats`](crate::Stats). An integration calls this once, when it is built;
    /// points with the same name share their counters.
    ///
    /// # Panics
    ///
    /// When a point of the same name but a different declaration was registered before, or when
    /// more than 16 distinct points are registered on one limiter.
    pub(crate) fn checkpoint(&self, point: &'static AdmissionPoint) -> Checkpoint {
        Checkpoint {
            limiter: self.clone(),
            point: self.shared.tallies.points.register(point),
        }
    }
}

/// Where a point's counters are in the limiter: an index into its table of points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PointId(u8);

/// [`AdmissionPoint::DIRECT`]'s place, registered with every limiter.
pub(super) const DIRECT: PointId = PointId(0);

/// The most admission points one limiter counts separately.
const MAX_POINTS: usize = 16;
const _: () = assert!(MAX_POINTS.is_power_of_two());

/// The registered admission points' counters, in a fixed table so that an admission finds its
/// point's counters by index, without a lock.
pub(super) struct Points {
    slots: [OnceLock<PointCounters>; MAX_POINTS],
    registering: Mutex<()>,
}

/// The most refusal reasons one admission point declares of its own, and the most early closes.
const MAX_OWN_REFUSALS: usize = 8;
const MAX_CLOSES: usize = 8;

/// Every refusal reason a point can count: the limiter's, then its own.
const MAX_REFUSALS: usize = RejectReason::ALL.len() + MAX_OWN_REFUSALS;

/// One admission point's counters, each split into [`STRIPES`](stripes::STRIPES) stripes.
pub(super) struct PointCounters {
    pub(super) point: &'static AdmissionPoint,
    stripes: Box<[PointStripe; stripes::STRIPES]>,
    /// Whether each refusal reason has been counted here before, for logging a
    /// misconfiguration loudly once.
    seen: [AtomicBool; MAX_REFUSALS],
    /// Paces the log lines about early closes, by reason.
    cut_logged: [Every; MAX_CLOSES],
}

/// One thread's share of a point's counters, on cache lines of its own.
#[derive(Default)]
#[repr(align(128))]
pub(super) struct PointStripe {
    /// Admitted since the limiter was created, by [`Kind`].
    pub(super) admitted: [AtomicU64; 2],
    /// Released since the limiter was created, by [`Kind`], in the stripe of the thread that
    /// dropped the permit: those holding a permit now are the admitted less the released.
    pub(super) released: [AtomicU64; 2],
    /// Refusals, in [`AdmissionPoint::all_refusals`]' order.
    pub(super) refused: [AtomicU64; MAX_REFUSALS],
    /// Early closes, in the order of the point's `closes`.
    pub(super) closed: [AtomicU64; MAX_CLOSES],
}

impl PointCounters {
    /// Counters for `point`.
    ///
    /// # Panics
    ///
    /// When two of the point's refusal reasons, or two of its closes, share a name: their counts
    /// would be merged in the stats without a word. Or when it declares more than 8 of either.
    fn new(point: &'static AdmissionPoint) -> Self {
        let names: Vec<&str> = point.all_refusals().map(ReasonInfo::name).collect();
        assert!(
            all_distinct(&names) && all_distinct(point.closes),
            "admission point {:?} declares a reason twice, or one of the limiter's",
            point.name
        );
        assert!(
            point.refusals.len() <= MAX_OWN_REFUSALS && point.closes.len() <= MAX_CLOSES,
            "admission point {:?} declares more than {MAX_OWN_REFUSALS} refusals or closes",
            point.name
        );
        PointCounters {
            point,
            stripes: Box::new(std::array::from_fn(|_| PointStripe::default())),
            seen: Default::default(),
            cut_logged: Default::default(),
        }
    }

    /// This thread's stripe.
    #[inline]
    pub(super) fn mine(&self) -> &PointStripe {
        &self.stripes[stripes::stripe()]
    }

    /// Every stripe, for the stats.
    pub(super) fn stripes(&self) -> &[PointStripe] {
        &self.stripes[..]
    }
}

/// Whether no two of `names` are equal.
fn all_distinct(names: &[&str]) -> bool {
    names
        .iter()
        .enumerate()
        .all(|(i, name)| !names[..i].contains(name))
}

impl Points {
    pub(super) fn new() -> Self {
        let points = Points {
            slots: Default::default(),
            registering: Mutex::new(()),
        };
        let _ =
            points.slots[usize::from(DIRECT.0)].set(PointCounters::new(&AdmissionPoint::DIRECT));
        points
    }

    /// The place of `point`, registering it on first use.
    fn register(&self, point: &'static AdmissionPoint) -> PointId {
        let _one_at_a_time = self
            .registering
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (i, slot) in self.slots.iter().enumerate() {
            let index = u8::try_from(i).expect("MAX_POINTS fits in u8");
            match slot.get() {
                Some(counters) if counters.point.name == point.name => {
                    assert!(
                        counters.point == point,
                        "admission point {:?} registered twice, differently",
                        point.name
                    );
                    return PointId(index);
                }
                Some(_) => {}
                None => {
                    let _ = slot.set(PointCounters::new(point));
                    return PointId(index);
                }
            }
        }
        panic!("more than {MAX_POINTS} admission points registered on one limiter");
    }

    /// The counters of a registered point.
    #[inline]
    pub(super) fn get(&self, id: PointId) -> &PointCounters {
        // A `PointId` is below `MAX_POINTS`, a power of two: the mask only spares a bounds check.
        self.slots[usize::from(id.0) & (MAX_POINTS - 1)]
            .get()
            .expect("a PointId is handed out only once its point is registered")
    }

    /// Every registered point's counters, in the order they were registered.
    pub(super) fn iter(&self) -> impl Iterator<Item = &PointCounters> {
        self.slots.iter().map_while(OnceLock::get)
    }
}

impl Points {
    /// Counts an admitted connection of `client` that `point` cut early, for `reason`, one of
    /// its `closes`, and logs it at info, at most once every 10 seconds per point and reason
    /// (a flood of slow clients must not flood the log), with the count so far.
    pub(super) fn count_closed(&self, point: PointId, reason: &str, client: &ClientKey) {
        let counters = self.get(point);
        let Some(i) = counters.point.closes.iter().position(|r| *r == reason) else {
            panic!(
                "{reason:?} is not one of the closes admission point {:?} declares",
                counters.point.name()
            );
        };
        stripes::up(&counters.mine().closed[i]);
        if counters.cut_logged[i].due(EVENT_LOG_PERIOD) {
            let so_far = stripes::sum(counters.stripes(), |s| &s.closed[i]);
            tracing::info!(
                %client,
                point = %counters.point.name(),
                reason,
                closed = so_far,
                "cut a connection early (lines like this one are at most one every 10s per reason)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::TokioClock;
    use crate::limiter::Installed;
    use crate::limits::Limits;

    /// A limiter with the default limits, built without the one `Config`, which sits above the
    /// core.
    fn limiter() -> Limiter {
        let installed = Installed {
            limits: Limits::default().compile().unwrap(),
            whole: std::sync::Arc::default(),
        };
        Limiter::with_installed(installed, TokioClock::new())
    }

    static ODD: ReasonInfo = ReasonInfo::new("odd", "refused", 400, 3);
    static A: AdmissionPoint = AdmissionPoint::connections("a").refusing(&[&ODD]);
    static A_AGAIN: AdmissionPoint = AdmissionPoint::connections("a");
    static BANNED_AGAIN: ReasonInfo = ReasonInfo::new("banned", "refused", 400, 3);
    static CONFUSED: AdmissionPoint = AdmissionPoint::connections("b").refusing(&[&BANNED_AGAIN]);
    static TWICE: AdmissionPoint = AdmissionPoint::connections("c").closing(&["x", "x"]);

    #[test]
    fn points_are_registered_once_by_name() {
        let limiter = limiter();
        let first = limiter.checkpoint(&A);
        let second = limiter.checkpoint(&A);
        assert_eq!(first.point, second.point);
        assert_ne!(first.point, DIRECT);
        assert_eq!(limiter.shared.tallies.points.iter().count(), 2);
        let caught = std::panic::catch_unwind(|| limiter.checkpoint(&A_AGAIN));
        assert!(caught.is_err(), "a different point of the same name");
    }

    #[test]
    fn a_point_is_held_to_its_declaration() {
        let limiter = limiter();
        for point in [&CONFUSED, &TWICE] {
            let registered = std::panic::catch_unwind(|| limiter.checkpoint(point));
            assert!(registered.is_err(), "{point:?}: a name used twice");
        }
        let a = limiter.checkpoint(&A);
        let request = std::panic::catch_unwind(|| {
            a.try_acquire_request_to("192.0.2.1".parse().unwrap(), "GET", "/")
        });
        assert!(request.is_err(), "a connections point admits no request");
        let foreign = std::panic::catch_unwind(|| a.refuse_connection(&BANNED_AGAIN, None));
        assert!(foreign.is_err(), "a reason the point does not declare");
        let permit = a.try_acquire("192.0.2.1".parse().unwrap()).unwrap();
        let closed = std::panic::catch_unwind(|| permit.count_closed("idle_timeout"));
        assert!(closed.is_err(), "a close the point does not declare");
        assert_eq!(limiter.stats().open_connections, 1);
    }

    #[test]
    fn own_reasons_are_counted_after_the_limiters() {
        assert_eq!(A.refusal_index(&ODD), Some(RejectReason::ALL.len()));
        assert_eq!(A.refusal_index(RejectReason::Banned.info()), None);
        assert_eq!(A.all_refusals().count(), RejectReason::ALL.len() + 1);
        let limiter = limiter();
        let a = limiter.checkpoint(&A);
        assert!(a.refuse_connection(&ODD, None), "the first");
        assert!(!a.refuse_connection(&ODD, None));
        assert_eq!(limiter.stats().point("a").unwrap().rejected["odd"], 2);
    }
}
