//! Why an admission was refused: one table of reasons ([`RejectReason`] and the rows of
//! `ReasonInfo` behind it), and the [`Rejected`] error that carries one.

use std::fmt;
use std::time::Duration;

/// gRPC status codes, as they are sent in `grpc-status`.
pub(crate) mod grpc {
    /// `INVALID_ARGUMENT`: the request is malformed, or says nothing usable.
    #[cfg_attr(
        not(any(feature = "http", feature = "proxy-protocol")),
        allow(dead_code)
    )]
    pub(crate) const INVALID_ARGUMENT: u8 = 3;
    /// `DEADLINE_EXCEEDED`: it did not arrive in time.
    #[cfg_attr(not(feature = "proxy-protocol"), allow(dead_code))]
    pub(crate) const DEADLINE_EXCEEDED: u8 = 4;
    /// `PERMISSION_DENIED`: the peer may not ask this.
    #[cfg_attr(not(feature = "proxy-protocol"), allow(dead_code))]
    pub(crate) const PERMISSION_DENIED: u8 = 7;
    /// `RESOURCE_EXHAUSTED`: the client used up its allowance.
    pub(crate) const RESOURCE_EXHAUSTED: u8 = 8;
    /// `INTERNAL`: the server is misconfigured.
    pub(crate) const INTERNAL: u8 = 13;
    /// `UNAVAILABLE`: the server as a whole is at its limit; try again later.
    pub(crate) const UNAVAILABLE: u8 = 14;
}

/// Everything said about one refusal reason, side by side.
///
/// A reason's `message` is what a refused client may see: it must name no limit and no count, so
/// [`ReasonInfo::new`] accepts only short printable ASCII without digits or `%` (which also makes
/// it a valid `grpc-message` as it stands), and a `name` in snake_case. Used in a `const` or
/// `static`, a bad row fails to compile. The limiter's reasons are [`RejectReason`]'s rows; an
/// admission point that refuses before the limiter can decide (no client address, a bad PROXY
/// header) brings rows of its own.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct ReasonInfo {
    name: &'static str,
    message: &'static str,
    http_status: u16,
    grpc_code: u8,
}

impl ReasonInfo {
    /// A reason named `name`, telling refused clients `message`, answered with `http_status` or
    /// the gRPC code `grpc_code`.
    ///
    /// # Panics
    ///
    /// When `name` is not snake_case ASCII, `message` is empty or has a character other than
    /// printable ASCII, or a digit or `%`, `http_status` is not an error status (400 to 599), or
    /// `grpc_code` is not a gRPC error code (1 to 16); at compile time, in a `const` or
    /// `static`.
    pub(crate) const fn new(
        name: &'static str,
        message: &'static str,
        http_status: u16,
        grpc_code: u8,
    ) -> Self {
        assert!(is_snake_case(name), "a reason's name must be snake_case");
        assert!(
            is_generic_message(message),
            "a reason's message must be printable ASCII without digits or '%'"
        );
        assert!(
            400 <= http_status && http_status <= 599,
            "a reason's HTTP status must be an error status, 400 to 599"
        );
        assert!(
            1 <= grpc_code && grpc_code <= 16,
            "a reason's gRPC code must be an error code, 1 to 16"
        );
        ReasonInfo {
            name,
            message,
            http_status,
            grpc_code,
        }
    }

    /// The stable snake_case name: the log field, the metric label, the key in the stats.
    pub(crate) const fn name(&self) -> &'static str {
        self.name
    }

    /// The generic text a refused client is told.
    pub(crate) const fn message(&self) -> &'static str {
        self.message
    }

    /// The HTTP status a refused request is answered with.
    pub(crate) const fn http_status(&self) -> u16 {
        self.http_status
    }

    /// The gRPC status code a refused call is answered with.
    pub(crate) const fn grpc_code(&self) -> u8 {
        self.grpc_code
    }

    /// Whether the server as a whole, not this client, is at a limit (answered `503`).
    #[cfg(test)]
    pub(crate) const fn is_server_wide(&self) -> bool {
        self.http_status == 503
    }
}

const fn is_snake_case(name: &str) -> bool {
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            return false;
        }
        i += 1;
    }
    true
}

const fn is_generic_message(message: &str) -> bool {
    let bytes = message.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b < 0x20 || b > 0x7e || b == b'%' || b.is_ascii_digit() {
            return false;
        }
        i += 1;
    }
    true
}

/// Declares [`RejectReason`] and its table: each variant with its facets on one row.
macro_rules! reasons {
    ($($(#[$doc:meta])* $variant:ident = $name:literal, $message:literal, $http:literal, $grpc:expr;)+) => {
        /// Which of the limiter's limits refused an admission.
        ///
        /// Each reason is one row of facets, side by side in one table:
        /// its stable name (the log field, the metric label and the key in
        /// [`Stats`](crate::Stats)), the generic message a refused client is told, and the HTTP
        /// status and gRPC code a refused request or call is answered with. The admission points
        /// that refuse before the limiter can decide (no client address, a bad PROXY header)
        /// count reasons of their own beside these, under their own names in
        /// [`Stats::rejected`](crate::Stats::rejected).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum RejectReason {
            $($(#[$doc])* $variant,)+
        }

        impl RejectReason {
            /// Every reason, in table order.
            pub const ALL: &'static [RejectReason] = &[$(RejectReason::$variant),+];
        }

        /// The facets of each [`RejectReason`], in the order of its variants.
        static TABLE: &[ReasonInfo] = &[$(ReasonInfo::new($name, $message, $http, $grpc)),+];
    };
}

reasons! {
    /// The client holds `max_conns_per_client` connections (or its override's limit).
    ClientConnections = "client_connections", "too many requests", 429, grpc::RESOURCE_EXHAUSTED;
    /// The server holds `max_conns_total` connections.
    TotalConnections = "total_connections", "server busy", 503, grpc::UNAVAILABLE;
    /// The client has `max_requests_per_client` requests in flight.
    ClientRequests = "client_requests", "too many requests", 429, grpc::RESOURCE_EXHAUSTED;
    /// The client connects faster than `connect_rate` allows.
    ConnectRate = "connect_rate", "come back later", 429, grpc::RESOURCE_EXHAUSTED;
    /// The client sends requests faster than `request_rate` allows.
    RequestRate = "request_rate", "come back later", 429, grpc::RESOURCE_EXHAUSTED;
    /// The client sends requests to a route faster than one of `path_rules` allows.
    PathRule = "path_rule", "come back later", 429, grpc::RESOURCE_EXHAUSTED;
    /// The client is banned, by the ban policy or by [`Limiter::ban`](crate::Limiter::ban).
    Banned = "banned", "come back later", 429, grpc::RESOURCE_EXHAUSTED;
    /// A new client arrived while `max_tracked_clients` were tracked and none could be
    /// forgotten (or `when_full` is `RefuseNew`).
    TrackedClientsFull = "tracked_clients_full", "server busy", 503, grpc::UNAVAILABLE;
    /// The server has `max_requests_total` requests in flight.
    TotalRequests = "total_requests", "server busy", 503, grpc::UNAVAILABLE;
    /// With [`fair_share`](crate::config::FairShare) on, a budget is contended and the client
    /// holds its fair share of it or more: the heaviest clients are refused first.
    FairShare = "fair_share", "server busy", 503, grpc::UNAVAILABLE;
}

impl RejectReason {
    /// This reason's row of the table.
    #[inline]
    pub(crate) fn info(self) -> &'static ReasonInfo {
        &TABLE[self as usize]
    }

    /// The stable snake_case name, for log fields and metric labels.
    ///
    /// ```
    /// use tower_connlimit::RejectReason;
    ///
    /// let reason = RejectReason::ClientConnections;
    /// assert_eq!(reason.as_str(), "client_connections");
    /// assert_eq!(reason.message(), "too many requests");
    /// assert_eq!((reason.http_status(), reason.grpc_code()), (429, 8));
    /// ```
    pub fn as_str(self) -> &'static str {
        self.info().name()
    }

    /// The generic text a refused client is told: it names no limit and no count.
    pub fn message(self) -> &'static str {
        self.info().message()
    }

    /// The HTTP status a refused request is answered with: 429 for a client's own limits, 503
    /// when the server as a whole is full.
    pub fn http_status(self) -> u16 {
        self.info().http_status()
    }

    /// The gRPC status code a refused call is answered with: `RESOURCE_EXHAUSTED` (8), or
    /// `UNAVAILABLE` (14) when the server as a whole is full.
    pub fn grpc_code(self) -> u8 {
        self.info().grpc_code()
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused admission.
///
/// Its [`Display`](fmt::Display) is deliberately generic, so it can be shown to the client without
/// revealing limits or counts; [`reason`](Rejected::reason) says which limit refused, for logs
/// and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub(crate) reason: RejectReason,
    pub(crate) retry_after: Option<Duration>,
}

impl Rejected {
    /// Which limit refused the admission.
    pub fn reason(&self) -> RejectReason {
        self.reason
    }

    /// For a rate refusal or a ban, how long until the same client would pass again (if nothing
    /// else changes); `None` for the concurrency limits, which free up whenever a connection or
    /// request ends.
    ///
    /// The exact wait, for the server's own code: sent as it is, it would tell a client a secret
    /// rule's exact parameters. The layers and the listener tell clients a coarse wait instead
    /// (`Retry-After`, `grpc-retry-pushback-ms`): never shorter, rounded up to a step of 1, 2, 5,
    /// 10, 15 or 30 seconds or minutes, or whole hours, plus up to a fifth of the step at random.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// [`retry_after`](Rejected::retry_after) as the client is told it; see [`coarse_secs`].
    pub(crate) fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after.map(coarse_secs)
    }
}

/// The steps, in seconds, a wait told to a client is rounded up to; past the last, whole hours.
const TOLD_STEPS: [u64; 13] = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];

/// A wait as a refused client is told it (`Retry-After`, `grpc-retry-pushback-ms`): never less
/// than the real wait, so a client that waits is let in, but rounded up to the next of a few
/// coarse steps (1, 2, 5, 10, 15 and 30 seconds, 1, 2, 5, 10, 15 and 30 minutes, then whole
/// hours) and with up to a fifth of the step added at random. A secret rule of 7 a minute,
/// whose wait is 8.57 s, is told as 10 to 12 s; a ban's time left as its step, so neither the
/// rule nor the ban's exact end can be read off the header. Whole seconds, never 0 (which
/// would invite an immediate, doomed retry).
pub(crate) fn coarse_secs(wait: Duration) -> u64 {
    let exact = wait
        .as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0))
        .max(1);
    let step = match TOLD_STEPS.iter().find(|step| **step >= exact) {
        Some(step) => *step,
        None => exact.div_ceil(3600).saturating_mul(3600),
    };
    let spread = step / 5;
    if spread == 0 {
        return step;
    }
    use std::hash::BuildHasher;
    let noise = foldhash::fast::RandomState::default().hash_one(wait);
    step.saturating_add(noise % (spread + 1))
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason.info().message())
    }
}

impl std::error::Error for Rejected {}

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

    #[test]
    fn told_waits_are_coarse_and_never_short() {
        let told = |d: Duration| coarse_secs(d);
        for (wait, least, most) in [
            (Duration::ZERO, 1, 1),
            (Duration::from_millis(1001), 2, 2),
            (Duration::from_millis(8_572), 10, 12),
            (Duration::from_secs(30), 30, 36),
            (Duration::from_secs(599), 600, 720),
            (Duration::from_secs(5_000), 7_200, 8_640),
            (Duration::MAX, u64::MAX, u64::MAX),
        ] {
            for _ in 0..50 {
                let secs = told(wait);
                assert!((least..=most).contains(&secs), "{wait:?}: {secs}");
            }
        }
        // The exact wait cannot be read back: two waits a second apart are told alike. Each
        // pair agrees by chance one time in four, so 200 tries fail together about once in
        // 10^25 runs (20 tries failed once in 300).
        assert!((0..200).any(|_| told(Duration::from_secs(11)) == told(Duration::from_secs(14))));
    }

    #[test]
    fn every_reason_has_its_own_row_and_name() {
        assert_eq!(RejectReason::ALL.len(), TABLE.len());
        for (i, reason) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i);
            assert!(std::ptr::eq(reason.info(), &TABLE[i]));
            let same_name = RejectReason::ALL
                .iter()
                .filter(|other| other.as_str() == reason.as_str())
                .count();
            assert_eq!(same_name, 1, "{reason}");
        }
        assert_eq!(RejectReason::Banned.to_string(), "banned");
    }

    #[test]
    fn messages_are_generic_and_valid_grpc_messages() {
        assert!(is_generic_message("too many requests"));
        for bad in ["", "limit of 10 reached", "100% full", "caf\u{e9}", "a\nb"] {
            assert!(!is_generic_message(bad), "{bad:?}");
        }
        assert!(is_snake_case("proxy_header_timeout"));
        for bad in ["", "Banned", "proxy-untrusted", "a b"] {
            assert!(!is_snake_case(bad), "{bad:?}");
        }
    }

    #[test]
    fn server_wide_reasons_are_answered_503() {
        let server_wide: Vec<_> = RejectReason::ALL
            .iter()
            .filter(|r| r.info().is_server_wide())
            .collect();
        assert_eq!(
            server_wide,
            [
                &RejectReason::TotalConnections,
                &RejectReason::TrackedClientsFull,
                &RejectReason::TotalRequests,
                &RejectReason::FairShare,
            ]
        );
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(secs(Duration::ZERO), Some(1));
        assert_eq!(secs(Duration::from_nanos(1)), Some(1));
        assert_eq!(secs(Duration::from_secs(1)), Some(1));
        assert_eq!(secs(Duration::from_millis(1001)), Some(2));
        assert!((30..=36).contains(&secs(Duration::from_secs(30)).unwrap()));
    }
}
