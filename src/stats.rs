//! What the limiter has seen: [`Stats`] (totals, refusals and cuts by reason, each admission
//! point's figures), one client's details ([`ClientStats`]), and a fleet's health.
//!
//! [`Limiter::stats`](crate::Limiter::stats) takes a snapshot without a lock; the `metrics`
//! feature and the admin's `/metrics` write the same figures as metric series.

pub use crate::limiter::{ByReason, ClientStats, FleetHealth, PointStats, Stats};
