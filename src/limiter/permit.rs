//! [`ConnPermit`] and [`RequestPermit`]: counts that release themselves.

use std::fmt;
use std::sync::Arc;

use super::entry::{Entry, Tally};
use super::release::release;
use super::{Kind, PointId};
use crate::key::ClientKey;

/// The release half shared by both permit types: gives its unit back exactly once, on drop. It
/// holds the client's entry, not the limiter, so that a permit costs no write to a line every
/// thread shares.
pub(super) struct Release {
    entry: Arc<Entry>,
    kind: Kind,
    point: PointId,
    /// How the unit stands to the global count.
    tally: Tally,
}

impl Release {
    /// The release of one `kind` counted on `entry` at `point`.
    #[inline]
    pub(super) fn new(entry: Arc<Entry>, kind: Kind, point: PointId, tally: Tally) -> Self {
        Release {
            entry,
            kind,
            point,
            tally,
        }
    }
}

impl Drop for Release {
    #[inline]
    fn drop(&mut self) {
        release(&self.entry, self.kind, self.point, self.tally);
    }
}

/// A keyed request's count under its address: given back on drop, without counting a release
/// at the admission point (the key's [`Release`] does that, once per request).
pub(super) struct AddressCount(pub(super) Arc<Entry>);

impl Drop for AddressCount {
    #[inline]
    fn drop(&mut self) {
        self.0.uncount(Kind::Request, Tally::Apart);
    }
}

/// A counted connection. Dropping it releases the count exactly once.
///
/// Drop runs on every exit path (a returned error, a panic unwinding through the holder, a
/// cancelled future that owned it), so a permit cannot leak unless it is deliberately forgotten
/// with [`std::mem::forget`].
#[must_use = "the connection is released as soon as the permit is dropped"]
pub struct ConnPermit {
    slot: Release,
}

impl ConnPermit {
    pub(super) fn new(slot: Release) -> Self {
        debug_assert_eq!(slot.kind, Kind::Connection);
        ConnPermit { slot }
    }

    /// The client key this connection is counted under.
    pub fn client_key(&self) -> ClientKey {
        self.slot.entry.key
    }

    /// Counts that this connection is being closed early, for `reason`: one of the `closes` of
    /// the [`AdmissionPoint`](crate::AdmissionPoint) that admitted it (the listener's deadlines:
    /// `handshake_timeout`, `idle_timeout`, `min_receive_rate`). Call it once, when deciding to
    /// close.
    ///
    /// # Panics
    ///
    /// When `reason` is not one of the closes the point declares (a permit from
    /// [`Limiter::try_acquire`](crate::Limiter::try_acquire) is counted at
    /// [`AdmissionPoint::DIRECT`](crate::AdmissionPoint::DIRECT), which declares none).
    pub(crate) fn count_closed(&self, reason: &'static str) {
        let slot = &self.slot;
        let entry = &slot.entry;
        entry
            .tallies
            .points
            .count_closed(slot.point, reason, &entry.key);
    }

    /// A handle that counts this connection's early close even after the connection, and this
    /// permit, are gone: for a server that learns of a cut only from the error its connection
    /// ended with (hyper's header read timeout, in `serve::Serve`).
    #[cfg(feature = "serve")]
    pub(crate) fn close_counter(&self) -> CloseCounter {
        CloseCounter {
            entry: Arc::clone(&self.slot.entry),
            point: self.slot.point,
        }
    }
}

#[cfg(feature = "serve")]
impl ConnPermit {
    /// With fair share's reclaim in force, what this connection's client is asked to give
    /// back: a server that can close an idle connection gracefully listens for asks on it.
    pub(crate) fn giveback(&self) -> Option<Arc<super::fair::Giveback>> {
        let entry = &self.slot.entry;
        (entry
            .tallies
            .reclaim
            .load(std::sync::atomic::Ordering::Relaxed))
        .then(|| entry.record.giveback_or_new())
    }
}

/// Counts the early close of one admitted connection, after the fact: see
/// `ConnPermit::close_counter`. It keeps the client's entry alive, not its count.
#[cfg(feature = "serve")]
#[derive(Clone)]
pub(crate) struct CloseCounter {
    entry: Arc<Entry>,
    point: PointId,
}

#[cfg(feature = "serve")]
impl CloseCounter {
    /// As [`ConnPermit::count_closed`].
    pub(crate) fn count(&self, reason: &'static str) {
        let entry = &self.entry;
        entry
            .tallies
            .points
            .count_closed(self.point, reason, &entry.key);
    }
}

#[cfg(feature = "serve")]
impl fmt::Debug for CloseCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloseCounter")
            .field("client", &self.entry.key)
            .finish()
    }
}

impl fmt::Debug for ConnPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnPermit")
            .field("client", &self.slot.entry.key)
            .finish()
    }
}

/// A counted in-flight request. Dropping it releases the count exactly once.
#[must_use = "the request is released as soon as the permit is dropped"]
pub struct RequestPermit {
    slot: Release,
    /// A keyed request's count under its address.
    address: Option<AddressCount>,
}

impl RequestPermit {
    pub(super) fn new(slot: Release) -> Self {
        debug_assert_eq!(slot.kind, Kind::Request);
        RequestPermit {
            slot,
            address: None,
        }
    }

    /// The same permit, counting a keyed request under its address too.
    pub(super) fn with_address(mut self, address: Option<AddressCount>) -> Self {
        self.address = address;
        self
    }

    /// The client key this request is counted under.
    pub fn client_key(&self) -> ClientKey {
        self.slot.entry.key
    }
}

impl fmt::Debug for RequestPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestPermit")
            .field("client", &self.slot.entry.key)
            .finish()
    }
}
