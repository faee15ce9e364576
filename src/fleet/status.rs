//! [`FleetStatus`]: where a node stands with its fleet.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::FleetConfig;

/// Where a node stands with its fleet: [`Fleet::status`](super::Fleet::status). `connected`,
/// `last_sync_age` and `sync_errors` are the limiter's own record ([`Stats::fleet`]), read when
/// the status is asked for; the task keeps the rest.
///
/// [`Stats::fleet`]: crate::Stats::fleet
#[derive(Clone, Debug)]
pub struct FleetStatus {
    /// This node's name.
    pub node: String,
    /// Whether the last sync reached Redis.
    pub connected: bool,
    /// How long ago the last successful sync ended.
    pub last_sync_age: Option<Duration>,
    /// Syncs that failed (Redis unreachable, an error, or no answer within the sync timeout).
    pub sync_errors: u64,
    /// Syncs that succeeded.
    pub syncs: u64,
    /// Bans this node published to the fleet.
    pub bans_published: u64,
    /// Bans (and lifts) this node applied from the fleet.
    pub bans_applied: u64,
    /// The last error, while not connected.
    pub last_error: Option<String>,
}

impl FleetStatus {
    pub(super) fn new(config: &FleetConfig) -> Self {
        FleetStatus {
            node: config.node.clone(),
            connected: false,
            last_sync_age: None,
            sync_errors: 0,
            syncs: 0,
            bans_published: 0,
            bans_applied: 0,
            last_error: None,
        }
    }
}

/// Locks the status; it is only ever assigned whole fields, so a panic elsewhere leaves it
/// usable.
pub(super) fn lock(status: &Mutex<FleetStatus>) -> MutexGuard<'_, FleetStatus> {
    status
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
