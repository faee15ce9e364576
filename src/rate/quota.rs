//! [`Quota`]: what a request would meet now, as [`Limiter::check_request`] reports it.
//!
//! [`Limiter::check_request`]: crate::Limiter::check_request

use std::time::Duration;

use super::RateLimit;
use crate::reason::Rejected;

/// What a request would meet if it came now, found without spending anything: whether it would
/// be admitted, and what is left of the request rate and of the in-flight limit it is held to
/// (its key's tier's for a keyed request, else its address's). What the request layer's
/// `RateLimit` headers are made of.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Quota {
    /// Admitted, or the refusal it would get (with its retry time).
    pub verdict: Result<(), Rejected>,
    /// The request rate, if one applies.
    pub rate: Option<RateQuota>,
    /// The in-flight limit, if one applies.
    pub in_flight: Option<InFlightQuota>,
}

/// What is left of a request rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateQuota {
    /// The rule.
    pub rule: RateLimit,
    /// How many requests it would admit now, one after the other.
    pub remaining: u32,
    /// With none left, how long until one more is admitted; with some left, how long until the
    /// rule has forgotten every request so far.
    pub reset: Duration,
}

/// What is left of an in-flight limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct InFlightQuota {
    /// The limit: requests in flight at once.
    pub limit: usize,
    /// How many more may start now.
    pub remaining: usize,
}
