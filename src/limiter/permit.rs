//! [`ConnPermit`] and [`RequestPermit`]: counts that release themselves.

use std::fmt;

use super::{Kind, Limiter, PointId};
use crate::key::ClientKey;

/// The release half shared by both permit types: gives its unit back exactly once, on drop.
struct Slot {
    limiter: Limiter,
    key: ClientKey,
    kind: Kind,
    point: PointId,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limiter.release(&self.key, self.kind, self.point);
    }
}

/// A counted connection. Dropping it releases the count exactly once.
///
/// Drop runs on every exit path (a returned error, a panic unwinding through the holder, a
/// cancelled future that owned it), so a permit cannot leak unless it is deliberately forgotten
/// with [`std::mem::forget`].
#[must_use = "the connection is released as soon as the permit is dropped"]
pub struct ConnPermit {
    slot: Slot,
}

impl ConnPermit {
    pub(super) fn new(limiter: Limiter, key: ClientKey, point: PointId) -> Self {
        ConnPermit {
            slot: Slot {
                limiter,
                key,
                kind: Kind::Connection,
                point,
            },
        }
    }

    /// The client key this connection is counted under.
    pub fn client_key(&self) -> ClientKey {
        self.slot.key
    }

    /// The limiter that issued this permit.
    pub fn limiter(&self) -> &Limiter {
        &self.slot.limiter
    }

    /// Counts that this connection is being closed early, for `reason`: one of the `closes` of
    /// the [`AdmissionPoint`](crate::AdmissionPoint) that admitted it (the listener's deadlines:
    /// `handshake_timeout`, `idle_timeout`, `min_receive_rate`). Call it once, when deciding to
    /// close.
    ///
    /// # Panics
    ///
    /// When `reason` is not one of the closes the point declares (a permit from
    /// [`Limiter::try_acquire`] is counted at [`AdmissionPoint::DIRECT`](crate::AdmissionPoint::DIRECT),
    /// which declares none).
    pub fn count_closed(&self, reason: &'static str) {
        self.slot.limiter.count_closed(self.slot.point, reason);
    }
}

impl fmt::Debug for ConnPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnPermit")
            .field("client", &self.slot.key)
            .finish()
    }
}

/// A counted in-flight request. Dropping it releases the count exactly once.
#[must_use = "the request is released as soon as the permit is dropped"]
pub struct RequestPermit {
    slot: Slot,
}

impl RequestPermit {
    pub(super) fn new(limiter: Limiter, key: ClientKey, point: PointId) -> Self {
        RequestPermit {
            slot: Slot {
                limiter,
                key,
                kind: Kind::Request,
                point,
            },
        }
    }

    /// The client key this request is counted under.
    pub fn client_key(&self) -> ClientKey {
        self.slot.key
    }
}

impl fmt::Debug for RequestPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestPermit")
            .field("client", &self.slot.key)
            .finish()
    }
}
