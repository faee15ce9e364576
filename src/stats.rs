//! What the limiter has seen: [`Stats`] (totals, refusals and cuts by reason, each admission
//! point's figures), one client's details ([`ClientStats`]), and where a node stands with its fleet
//! ([`FleetStatus`]).
//!
//! [`Limiter::stats`](crate::Limiter::stats) takes a snapshot without a lock; the `metrics`
//! feature and the admin's `/metrics` write the same figures as metric series.

pub use crate::limiter::{
    BudgetStats, ByReason, ClientStats, FairShareStats, FleetError, FleetNode, FleetStatus,
    PointStats, Stats,
};
