//! Counters split into stripes, so that threads counting at once write different cache lines.
//!
//! Each thread counts in a stripe of its own (stripes are handed out round robin, so threads
//! share one only past [`STRIPES`] of them), and a figure is the sum of its stripes. A count that
//! goes down in another thread than the one it went up in (a connection admitted by the accept
//! loop, released by its task) makes single stripes wrap; their sum, taken with wrapping
//! arithmetic, is exact whenever nothing is in flight.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// How many stripes each striped counter has.
pub(super) const STRIPES: usize = 16;

thread_local! {
    /// This thread's stripe, or `usize::MAX` before its first count.
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The stripe this thread counts in.
#[inline]
pub(super) fn stripe() -> usize {
    STRIPE.with(|stripe| {
        let mine = stripe.get();
        if mine != usize::MAX {
            return mine;
        }
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let mine = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
        stripe.set(mine);
        mine
    })
}

/// Adds one to `count`, returning what it was.
#[inline]
pub(super) fn up(count: &AtomicU64) -> u64 {
    count.fetch_add(1, Ordering::Relaxed)
}

/// Takes one from `count` (it may wrap: see the [module docs](self)).
#[inline]
pub(super) fn down(count: &AtomicU64) {
    count.fetch_sub(1, Ordering::Relaxed);
}

/// The sum of one counter over every stripe, `of(stripe)` picking it out of each; never below
/// zero (a sum read while counts move between stripes may be a little off, never negative).
pub(super) fn sum<'a, S: 'a>(
    stripes: impl IntoIterator<Item = &'a S>,
    of: impl Fn(&'a S) -> &'a AtomicU64,
) -> u64 {
    let total = stripes.into_iter().fold(0u64, |sum, s| {
        sum.wrapping_add(of(s).load(Ordering::Relaxed))
    });
    // A wrapped (negative) total is a release counted before its admission was.
    if total > u64::MAX / 2 {
        0
    } else {
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_keeps_its_stripe_and_threads_take_turns() {
        let mine = stripe();
        assert_eq!(stripe(), mine);
        let others: Vec<usize> = (0..STRIPES)
            .map(|_| std::thread::spawn(stripe).join().unwrap())
            .collect();
        assert!(others.iter().all(|&s| s < STRIPES));
        let mut distinct = others.clone();
        distinct.sort_unstable();
        distinct.dedup();
        // Round robin (other tests' threads may take turns in between).
        assert!(distinct.len() > 1, "{others:?}");
    }

    #[test]
    fn counts_that_move_between_stripes_sum_up_exactly() {
        let stripes: Vec<AtomicU64> = (0..3).map(|_| AtomicU64::new(0)).collect();
        up(&stripes[0]);
        up(&stripes[0]);
        down(&stripes[1]);
        assert_eq!(sum(&stripes, |s| s), 1);
        down(&stripes[2]);
        down(&stripes[2]);
        assert_eq!(sum(&stripes, |s| s), 0, "never below zero");
    }
}
