//! [`Stats`], [`RejectedStats`] and [`ClientStats`]: what the limiter has seen.

use super::ClientState;
use crate::ClientKey;

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
    /// All refusals.
    pub fn total(&self) -> u64 {
        self.client_connections
            + self.total_connections
            + self.client_requests
            + self.connect_rate
            + self.request_rate
            + self.path_rule
            + self.banned
            + self.tracked_clients_full
            + self.no_client_address
            + self.proxy_untrusted
            + self.proxy_header_invalid
            + self.proxy_header_timeout
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

/// Why a listener closed a connection on its own, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Closed {
    HandshakeTimeout,
    IdleTimeout,
    MinReceiveRate,
    ProxyUntrusted,
    ProxyHeaderInvalid,
    ProxyHeaderTimeout,
}

/// One client's counts; see [`Limiter::client`](crate::Limiter::client) and [`Limiter::clients`](crate::Limiter::clients).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// The client key.
    pub key: ClientKey,
    /// Connections this client holds open.
    pub open_connections: usize,
    /// Requests this client has in flight.
    pub in_flight_requests: usize,
}

impl ClientStats {
    pub(super) fn new(key: ClientKey, state: &ClientState) -> Self {
        ClientStats {
            key,
            open_connections: state.connections,
            in_flight_requests: state.requests,
        }
    }
}
