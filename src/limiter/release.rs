//! Release: the one function that gives a count back.

use super::entry::{Entry, Tally};
use super::{stripes, Kind, PointId};
use std::sync::atomic::Ordering;

/// Gives back one `kind` that `entry`'s client was admitted at `point`, counted as `tally`, and
/// the place it took in the global count if it holds one. Runs exactly once per permit, from its `Drop`, and touches
/// only the client's entry and this thread's stripe of the point's counters: never the map.
#[inline]
pub(super) fn release(entry: &Entry, kind: Kind, point: PointId, tally: Tally) {
    let home = &entry.tallies;
    stripes::up(&home.points.get(point).mine().released[kind as usize]);
    if entry.uncount(kind, tally) {
        home.total[kind as usize].fetch_sub(1, Ordering::Relaxed);
    }
}
