//! Counters split into stripes, so that threads counting at once write different cache lines.
//!
//! Each thread counts in a stripe of its own (stripes are handed out round robin, so threads
//! share one only past [`STRIPES`] of them), and a figure is the sum of its stripes. Every
//! striped counter only goes up: what is open now is what was admitted less what was released,
//! each summed over the stripes, so that a connection admitted on one thread and released on
//! another is counted right.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// How many stripes each striped counter has.
pub(super) const STRIPES: usize = 16;
const _: () = assert!(STRIPES.is_power_of_two());

thread_local! {
    /// This thread's stripe, or `usize::MAX` before its first count.
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The stripe this thread counts in. The common case is one thread-local read, small enough
/// to be inlined into every decision; the first count of a thread is out of line.
#[inline]
pub(super) fn stripe() -> usize {
    let mine = STRIPE.with(Cell::get);
    if mine != usize::MAX {
        return mine & (STRIPES - 1); // always below already: spares the caller a bounds check
    }
    first_stripe()
}

/// Hands this thread its stripe, round robin, at its first count.
#[cold]
#[inline(never)]
fn first_stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let mine = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    STRIPE.with(|stripe| stripe.set(mine));
    mine
}

/// Adds one to `count`, returning what it was.
#[inline]
pub(super) fn up(count: &AtomicU64) -> u64 {
    count.fetch_add(1, Ordering::Relaxed)
}

/// The sum of one counter over every stripe, `of(stripe)` picking it out of each.
pub(super) fn sum<'a, S: 'a>(
    stripes: impl IntoIterator<Item = &'a S>,
    of: impl Fn(&'a S) -> &'a AtomicU64,
) -> u64 {
    stripes
        .into_iter()
        .map(|s| of(s).load(Ordering::Relaxed))
        .fold(0, u64::wrapping_add)
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
    fn a_sum_adds_up_every_stripe() {
        let stripes: Vec<AtomicU64> = (0..3).map(|_| AtomicU64::new(0)).collect();
        assert_eq!(up(&stripes[0]), 0);
        assert_eq!(up(&stripes[0]), 1);
        up(&stripes[2]);
        assert_eq!(sum(&stripes, |s| s), 3);
    }
}
