//! The per-point counters, split into stripes so that threads admitting at the same time write
//! different cache lines.
//!
//! Each thread writes the stripe it was given on first use, and a permit gives its count back
//! to the stripe that counted it, so no stripe ever goes below zero. [`Limiter::stats`] adds the
//! stripes up.
//!
//! Only counters that enforce nothing are striped. The counts that limits are checked against
//! (each client's, the global totals, the tracked clients) stay single, exact atomics: a striped
//! count could not be checked against a cap without over-admitting.
//!
//! [`Limiter::stats`]: super::Limiter::stats

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::point::PointCounters;
use super::{AdmissionPoint, Kind};

/// How many stripes: enough that the threads of a typical runtime rarely share one.
pub(super) const STRIPES: usize = 8;

/// One stripe: every point's counters, for both kinds, on cache lines no other stripe uses.
#[derive(Default)]
#[repr(align(128))]
pub(super) struct Stripe {
    points: [[PointCounters; 4]; 2],
}

/// All the stripes of one limiter.
#[derive(Default)]
pub(super) struct Striped {
    stripes: [Stripe; STRIPES],
}

impl Striped {
    /// `point`'s counters of `kind` in stripe `stripe`.
    #[inline]
    pub(super) fn get(&self, stripe: usize, kind: Kind, point: AdmissionPoint) -> &PointCounters {
        &self.stripes[stripe].points[kind as usize][point.index()]
    }

    /// `point`'s counters of `kind` in every stripe.
    pub(super) fn all(
        &self,
        kind: Kind,
        point: AdmissionPoint,
    ) -> impl Iterator<Item = &PointCounters> {
        self.stripes
            .iter()
            .map(move |stripe| &stripe.points[kind as usize][point.index()])
    }

    /// Every counter block, in every stripe.
    pub(super) fn every(&self) -> impl Iterator<Item = &PointCounters> {
        self.stripes
            .iter()
            .flat_map(|stripe| stripe.points.iter().flatten())
    }
}

/// The stripe the calling thread writes: handed out in turn at a thread's first admission.
#[inline]
pub(super) fn current() -> usize {
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    STRIPE
        .try_with(|stripe| match stripe.get() {
            usize::MAX => {
                let given = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
                stripe.set(given);
                given
            }
            given => given,
        })
        // Only while the thread is being torn down; any stripe will do.
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_keeps_its_stripe_and_threads_spread_out() {
        let mine = current();
        assert!(mine < STRIPES);
        assert_eq!(current(), mine, "a thread keeps its stripe");
        let others: std::collections::HashSet<usize> = (0..STRIPES)
            .map(|_| std::thread::spawn(current).join().unwrap())
            .collect();
        assert!(
            others.len() > 1,
            "new threads are spread over the stripes: {others:?}"
        );
    }
}
