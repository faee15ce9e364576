//! [`ConnPermit`] and [`RequestPermit`]: counts that release themselves.

use std::fmt;

use super::{AdmissionPoint, Kind, Limiter};
use crate::ClientKey;

/// The release half shared by both permit types: gives its unit back exactly once, on drop.
pub(super) struct Slot {
    limiter: Limiter,
    key: ClientKey,
    kind: Kind,
    point: AdmissionPoint,
}

impl Slot {
    pub(super) fn new(limiter: Limiter, key: ClientKey, kind: Kind, point: AdmissionPoint) -> Self {
        Slot {
            limiter,
            key,
            kind,
            point,
        }
    }
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
    pub(super) slot: Slot,
}

impl ConnPermit {
    /// The client key this connection is counted under.
    pub fn client_key(&self) -> ClientKey {
        self.slot.key
    }

    /// The limiter that issued this permit.
    pub fn limiter(&self) -> &Limiter {
        &self.slot.limiter
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
    pub(super) slot: Slot,
}

impl RequestPermit {
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
