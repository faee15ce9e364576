//! Release: the one function that gives a count back.

use std::sync::atomic::Ordering;

use super::{Kind, Limiter, PointId};
use crate::key::ClientKey;

impl Limiter {
    /// Gives back one unit of `kind` for `key`, admitted at `point`, removing the client's entry
    /// when nothing about it needs remembering (no permits, and no rate or ban state that could
    /// still refuse something). Runs exactly once per permit, from its `Drop`.
    pub(super) fn release(&self, key: &ClientKey, kind: Kind, point: PointId) {
        let shared = &*self.shared;
        shared.points.get(point).open[kind as usize].fetch_sub(1, Ordering::Relaxed);
        // The client's count and the total drop together, under the shard lock that `admit`
        // counts them under.
        let removed = shared.clients.remove_if_mut(key, |_, state| {
            let count = state.count_mut(kind);
            debug_assert!(*count > 0, "released a permit that was never counted");
            *count = count.saturating_sub(1);
            if kind == Kind::Connection {
                shared.open_connections.fetch_sub(1, Ordering::Relaxed);
            }
            let forget = state.is_forgettable(|| self.now());
            if !forget && state.is_idle() {
                shared.retaining.store(true, Ordering::Relaxed);
            }
            forget
        });
        if removed.is_some() {
            shared.tracked.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
