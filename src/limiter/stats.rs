//! [`Stats`], [`RejectedStats`] and [`ClientStats`]: what the limiter has seen.

use std::time::Duration;

use super::point::CAUSES;
use super::ClientState;
use crate::{AdmissionPoint, ClientKey};

/// A snapshot of a [`Limiter`](crate::Limiter)'s counters; see [`Limiter::stats`](crate::Limiter::stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections holding a permit now.
    pub open_connections: usize,
    /// Requests holding a permit now.
    pub in_flight_requests: usize,
    /// Clients with an entry in the map: an open connection, an in-flight request, or rate
    /// state that has not expired yet.
    pub tracked_clients: usize,
    /// Connections admitted since the limiter was created.
    pub admitted_connections: u64,
    /// Requests admitted since the limiter was created.
    pub admitted_requests: u64,
    /// Refusals since the limiter was created, by reason.
    pub rejected: RejectedStats,
    /// Admitted connections the listener closed because a deadline passed, by deadline.
    pub timeouts: TimeoutStats,
    /// Refusals that dry-run rules (and dry-run ban policies) would have made, but let through.
    pub dry_run: u64,
    /// Bans imposed, by the ban policy or by [`Limiter::ban`](crate::Limiter::ban).
    pub bans: u64,
    /// Drained clients forgotten early to make room under `max_tracked_clients`: each may come
    /// back with a fresh record, so a rising count under a flood is worth an alert.
    pub evictions: u64,
    /// What [`ConnLimitListener`](crate::ConnLimitListener) admitted and refused (connections).
    pub listener: PointStats,
    /// What the make-service level of [`ConnLimitLayer`](crate::ConnLimitLayer) admitted and
    /// refused (connections).
    pub make_service: PointStats,
    /// What the request level of [`ConnLimitLayer`](crate::ConnLimitLayer) admitted and refused
    /// (requests).
    pub request_layer: PointStats,
    /// What your own calls to the limiter admitted and refused (connections and requests
    /// together).
    pub direct: PointStats,
}

impl Stats {
    /// The figures of one admission point.
    pub fn point(&self, point: AdmissionPoint) -> &PointStats {
        match point {
            AdmissionPoint::Listener => &self.listener,
            AdmissionPoint::MakeService => &self.make_service,
            AdmissionPoint::RequestLayer => &self.request_layer,
            AdmissionPoint::Direct => &self.direct,
        }
    }
}

/// One admission point's figures; see [`Stats::point`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PointStats {
    /// Connections admitted here and holding a permit now (0 at the request layer).
    pub open_connections: usize,
    /// Requests admitted here and holding a permit now (0 at the listener and make-service).
    pub in_flight_requests: usize,
    /// Connections and requests admitted here since the limiter was created.
    pub admitted: u64,
    /// Connections and requests refused here since the limiter was created, by reason.
    pub rejected: RejectedStats,
}

/// Refusal counts by reason; see [`Stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RejectedStats {
    /// Connections refused by the per-client limit.
    pub client_connections: u64,
    /// Connections refused by the global cap.
    pub total_connections: u64,
    /// Requests refused by the per-client in-flight limit.
    pub client_requests: u64,
    /// Connections refused by `connect_rate`.
    pub connect_rate: u64,
    /// Requests refused by `request_rate`.
    pub request_rate: u64,
    /// Requests refused by one of `path_rules`.
    pub path_rule: u64,
    /// Connections and requests of banned clients.
    pub banned: u64,
    /// New clients refused because `max_tracked_clients` were tracked.
    pub tracked_clients_full: u64,
    /// Connections and requests refused (a request with 500) because no client address could be
    /// found: a misconfiguration, logged at error level the first time.
    pub no_client_address: u64,
    /// Connections refused at a PROXY-protocol listener because the peer is not one of
    /// `trusted_proxies`.
    pub proxy_untrusted: u64,
    /// Connections from a trusted proxy refused because their PROXY header was malformed,
    /// missing, or too long.
    pub proxy_header_invalid: u64,
    /// Connections from a trusted proxy refused because their PROXY header did not arrive within
    /// `proxy_header_timeout` (or too many headers were being read at once).
    pub proxy_header_timeout: u64,
}

impl RejectedStats {
    /// The counts, from an array indexed as [`Cause::index`](super::Cause) numbers the causes.
    pub(super) fn from_counts(counts: &[u64; CAUSES]) -> Self {
        let [client_connections, total_connections, client_requests, connect_rate, request_rate, path_rule, banned, tracked_clients_full, no_client_address, proxy_untrusted, proxy_header_invalid, proxy_header_timeout] =
            *counts;
        RejectedStats {
            client_connections,
            total_connections,
            client_requests,
            connect_rate,
            request_rate,
            path_rule,
            banned,
            tracked_clients_full,
            no_client_address,
            proxy_untrusted,
            proxy_header_invalid,
            proxy_header_timeout,
        }
    }

    /// Every count with its stable snake_case name (a [`RejectReason`](crate::RejectReason)'s
    /// `as_str`, or the name of the field), for metrics and logs.
    pub fn by_reason(&self) -> [(&'static str, u64); CAUSES] {
        [
            ("client_connections", self.client_connections),
            ("total_connections", self.total_connections),
            ("client_requests", self.client_requests),
            ("connect_rate", self.connect_rate),
            ("request_rate", self.request_rate),
            ("path_rule", self.path_rule),
            ("banned", self.banned),
            ("tracked_clients_full", self.tracked_clients_full),
            ("no_client_address", self.no_client_address),
            ("proxy_untrusted", self.proxy_untrusted),
            ("proxy_header_invalid", self.proxy_header_invalid),
            ("proxy_header_timeout", self.proxy_header_timeout),
        ]
    }

    /// Both sets of counts, added up.
    pub(super) fn plus(&self, other: &RejectedStats) -> RejectedStats {
        let (mine, theirs) = (self.by_reason(), other.by_reason());
        RejectedStats::from_counts(&std::array::from_fn(|i| mine[i].1 + theirs[i].1))
    }

    /// All refusals.
    pub fn total(&self) -> u64 {
        self.by_reason().iter().map(|(_, count)| count).sum()
    }
}

/// Connections closed by a listener deadline, by deadline; see [`Stats::timeouts`] and the
/// `handshake_timeout`, `idle_timeout` and `min_receive_rate` fields of [`Config`](crate::Config).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TimeoutStats {
    /// The client sent no first byte within `handshake_timeout`.
    pub handshake: u64,
    /// No byte moved either way for `idle_timeout`.
    pub idle: u64,
    /// The client sent slower than `min_receive_rate` allows.
    pub min_receive_rate: u64,
}

impl TimeoutStats {
    /// All connections closed by a deadline.
    pub fn total(&self) -> u64 {
        self.handshake + self.idle + self.min_receive_rate
    }
}

/// Which deadline closed an admitted connection, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Closed {
    HandshakeTimeout,
    IdleTimeout,
    MinReceiveRate,
}

/// One client's details; see [`Limiter::client`](crate::Limiter::client),
/// [`Limiter::top_clients`](crate::Limiter::top_clients) and
/// [`Limiter::clients`](crate::Limiter::clients).
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
    pub(super) fn new(key: ClientKey, state: &ClientState, now: u64) -> Self {
        let left = |until: u64| (until > now).then(|| Duration::from_nanos(until - now));
        ClientStats {
            key,
            open_connections: state.connections,
            in_flight_requests: state.requests,
            banned_for: left(state.banned_until),
            bans: state.bans,
            remembered_for: left(state.retain_until),
        }
    }
}
