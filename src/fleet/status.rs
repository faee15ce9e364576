//! [`FleetStatus`]: where a node stands with its fleet.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::FleetConfig;

/// Where a node stands with its fleet: [`Fleet::status`](super::Fleet::status).
#[derive(Clone, Debug)]
pub struct FleetStatus {
    /// This node's name.
    pub node: String,
    /// Whether the last sync reached Redis.
    pub connected: bool,
    /// When the last successful sync ended.
    pub last_sync: Option<Instant>,
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
            last_sync: None,
            sync_errors: 0,
            syncs: 0,
            bans_published: 0,
            bans_applied: 0,
            last_error: None,
        }
    }

    /// How long ago the last successful sync ended.
    pub fn last_sync_age(&self) -> Option<Duration> {
        self.last_sync.map(|at| at.elapsed())
    }
}

/// Locks the status; it is only ever assigned whole fields, so a panic elsewhere leaves it
/// usable.
pub(super) fn lock(status: &Mutex<FleetStatus>) -> MutexGuard<'_, FleetStatus> {
    status
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
