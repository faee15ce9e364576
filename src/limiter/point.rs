//! [`AdmissionPoint`]: where a connection or request was admitted or refused, and the counters
//! kept for each point.

use std::sync::atomic::{AtomicU64, AtomicUsize};

use crate::RejectReason;

/// Where a connection or request met the limiter, for [`Stats`](crate::Stats), logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AdmissionPoint {
    /// [`ConnLimitListener`](crate::ConnLimitListener), as an accept loop, an axum `Listener` or
    /// an incoming stream (tonic): connections.
    Listener,
    /// [`ConnLimitLayer`](crate::ConnLimitLayer) around a make-service: connections.
    MakeService,
    /// [`ConnLimitLayer`](crate::ConnLimitLayer) around a request service: requests (gRPC calls
    /// included).
    RequestLayer,
    /// Your own code, calling [`Limiter::try_acquire`](crate::Limiter::try_acquire) and the other
    /// `try_acquire*` and `allow_*` methods: connections or requests.
    Direct,
}

impl AdmissionPoint {
    /// Every admission point.
    pub const ALL: [AdmissionPoint; 4] = [
        AdmissionPoint::Listener,
        AdmissionPoint::MakeService,
        AdmissionPoint::RequestLayer,
        AdmissionPoint::Direct,
    ];

    /// A stable snake_case name, for log fields and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            AdmissionPoint::Listener => "listener",
            AdmissionPoint::MakeService => "make_service",
            AdmissionPoint::RequestLayer => "request_layer",
            AdmissionPoint::Direct => "direct",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for AdmissionPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why something was refused: a limit's [`RejectReason`], or one of the refusals that happen
/// before the limiter can decide (no address, a PROXY header problem).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cause {
    Limit(RejectReason),
    NoClientAddress,
    ProxyUntrusted,
    ProxyHeaderInvalid,
    ProxyHeaderTimeout,
}

/// How many distinct [`Cause`]s there are.
pub(super) const CAUSES: usize = 12;

impl Cause {
    /// The stable name, as in [`RejectedStats::by_reason`](crate::RejectedStats::by_reason).
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Cause::Limit(reason) => reason.as_str(),
            Cause::NoClientAddress => "no_client_address",
            Cause::ProxyUntrusted => "proxy_untrusted",
            Cause::ProxyHeaderInvalid => "proxy_header_invalid",
            Cause::ProxyHeaderTimeout => "proxy_header_timeout",
        }
    }

    pub(super) fn index(self) -> usize {
        match self {
            Cause::Limit(reason) => match reason {
                RejectReason::ClientConnections => 0,
                RejectReason::TotalConnections => 1,
                RejectReason::ClientRequests => 2,
                RejectReason::ConnectRate => 3,
                RejectReason::RequestRate => 4,
                RejectReason::PathRule => 5,
                RejectReason::Banned => 6,
                RejectReason::TrackedClientsFull => 7,
            },
            Cause::NoClientAddress => 8,
            Cause::ProxyUntrusted => 9,
            Cause::ProxyHeaderInvalid => 10,
            Cause::ProxyHeaderTimeout => 11,
        }
    }
}

/// One admission point's counters, on a cache line of their own so that points used by
/// different threads (the accept loop, the request tasks) do not slow each other down.
#[derive(Default)]
#[repr(align(128))]
pub(super) struct PointCounters {
    /// Connections (or, at the request layer, requests) holding a permit now.
    pub(super) open: AtomicUsize,
    pub(super) admitted: AtomicU64,
    /// Refusals, by [`Cause::index`].
    pub(super) refused: [AtomicU64; CAUSES],
}
