//! [`Rejected`] and [`RejectReason`]: why an admission was refused.

use std::fmt;
use std::time::Duration;

/// A decision for a custom server to enforce, in the manner of a security gate's `DefenseDecision`: the limiter
/// decides and counts, the caller acts. See [`Limiter::allow_connect`](crate::Limiter::allow_connect)
/// and [`Limiter::allow_request`](crate::Limiter::allow_request).
#[derive(Debug)]
#[must_use = "a decision does nothing until it is enforced"]
pub enum Decision<P> {
    /// Proceed; holding `P` (a permit) keeps the connection or request counted.
    Allow(P),
    /// Refuse this request but keep the connection (answer 429, or ignore it).
    Drop(Rejected),
    /// Close the connection.
    Close(Rejected),
}

/// A refused admission.
///
/// Its [`Display`](fmt::Display) is deliberately generic, so it can be shown to the client without
/// revealing limits or counts; [`reason`](Rejected::reason) says which limit refused, for logs
/// and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub(super) reason: RejectReason,
    pub(super) retry_after: Option<Duration>,
}

impl Rejected {
    /// Which limit refused the admission.
    pub fn reason(&self) -> RejectReason {
        self.reason
    }

    /// For a rate refusal, how long until the same client would pass the rate rule again (if
    /// nothing else changes); `None` for the concurrency limits, which free up whenever a
    /// connection or request ends.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// [`retry_after`](Rejected::retry_after) for a `Retry-After` header: whole seconds,
    /// rounded up, and never 0 (which would invite an immediate, doomed retry).
    pub(crate) fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after
            .map(|wait| (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1))
    }

    /// [`retry_after`](Rejected::retry_after) for gRPC's `grpc-retry-pushback-ms`: whole
    /// milliseconds, rounded up, and never 0.
    pub(crate) fn retry_after_millis(&self) -> Option<u64> {
        self.retry_after.map(|wait| {
            let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            let partial = wait.subsec_nanos() % 1_000_000 > 0;
            millis.saturating_add(u64::from(partial)).max(1)
        })
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason.public_message())
    }
}

impl std::error::Error for Rejected {}

/// Which limit refused an admission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// The client holds `max_conns_per_client` connections (or its override's limit).
    ClientConnections,
    /// The server holds `max_conns_total` connections.
    TotalConnections,
    /// The client has `max_requests_per_client` requests in flight.
    ClientRequests,
    /// The client connects faster than `connect_rate` allows.
    ConnectRate,
    /// The client sends requests faster than `request_rate` allows.
    RequestRate,
    /// The client sends requests to a route faster than one of `path_rules` allows.
    PathRule,
    /// The client is banned, by the ban policy or by [`Limiter::ban`](crate::Limiter::ban).
    Banned,
    /// A new client arrived while `max_tracked_clients` were tracked and none could be
    /// forgotten (or `when_full` is `RefuseNew`).
    TrackedClientsFull,
}

impl RejectReason {
    /// The generic text shown to clients: it names no limit and no count.
    pub(crate) fn public_message(&self) -> &'static str {
        match self {
            RejectReason::ClientConnections => "client connection limit reached",
            RejectReason::TotalConnections => "server connection limit reached",
            RejectReason::ClientRequests => "client request limit reached",
            RejectReason::ConnectRate => "client connection rate limit reached",
            RejectReason::RequestRate => "client request rate limit reached",
            RejectReason::PathRule => "client request rate limit reached",
            RejectReason::Banned => "client temporarily refused",
            RejectReason::TrackedClientsFull => "server busy",
        }
    }

    /// A stable snake_case name, for log fields and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            RejectReason::ClientConnections => "client_connections",
            RejectReason::TotalConnections => "total_connections",
            RejectReason::ClientRequests => "client_requests",
            RejectReason::ConnectRate => "connect_rate",
            RejectReason::RequestRate => "request_rate",
            RejectReason::PathRule => "path_rule",
            RejectReason::Banned => "banned",
            RejectReason::TrackedClientsFull => "tracked_clients_full",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(wait: Duration) -> Option<u64> {
        Rejected {
            reason: RejectReason::ConnectRate,
            retry_after: Some(wait),
        }
        .retry_after_secs()
    }

    /// Every reason. The match fails to compile when a variant is added and not listed here.
    const ALL: [RejectReason; 8] = {
        use RejectReason::*;
        const fn listed(reason: RejectReason) -> RejectReason {
            match reason {
                ClientConnections | TotalConnections | ClientRequests | ConnectRate
                | RequestRate | PathRule | Banned | TrackedClientsFull => reason,
            }
        }
        [
            listed(ClientConnections),
            listed(TotalConnections),
            listed(ClientRequests),
            listed(ConnectRate),
            listed(RequestRate),
            listed(PathRule),
            listed(Banned),
            listed(TrackedClientsFull),
        ]
    };

    #[test]
    fn public_messages_are_valid_grpc_messages() {
        // gRPC percent-encodes `grpc-message` outside printable ASCII, and `%` itself: these
        // texts need no encoding, so refusals can send them as they are.
        for reason in ALL {
            let text = reason.public_message();
            assert!(
                text.bytes()
                    .all(|b| (0x20..=0x7e).contains(&b) && b != b'%'),
                "{text:?}"
            );
            assert!(
                !text.chars().any(|c| c.is_ascii_digit()),
                "no numbers: {text:?}"
            );
        }
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(secs(Duration::ZERO), Some(1));
        assert_eq!(secs(Duration::from_nanos(1)), Some(1));
        assert_eq!(secs(Duration::from_secs(1)), Some(1));
        assert_eq!(secs(Duration::from_millis(1001)), Some(2));
        assert_eq!(secs(Duration::from_secs(30)), Some(30));
    }

    #[test]
    fn retry_after_millis_rounds_up_and_is_never_zero() {
        let millis = |wait| {
            Rejected {
                reason: RejectReason::RequestRate,
                retry_after: Some(wait),
            }
            .retry_after_millis()
        };
        assert_eq!(millis(Duration::ZERO), Some(1));
        assert_eq!(millis(Duration::from_nanos(1)), Some(1));
        assert_eq!(millis(Duration::from_millis(250)), Some(250));
        assert_eq!(millis(Duration::from_micros(250_001)), Some(251));
        assert_eq!(millis(Duration::MAX), Some(u64::MAX));
    }
}
