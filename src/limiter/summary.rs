//! The rate-limited warning that sums up refusals, so that a flood of them cannot flood the log.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ClientKey;

/// How long one summary covers.
pub(super) const SUMMARY_PERIOD_NANOS: u64 = 10_000_000_000;

/// Bits in the distinct-client sketch: enough to count up to tens of thousands of clients
/// within a few percent, in 512 bytes.
const SKETCH_WORDS: usize = 64;
const SKETCH_BITS: usize = SKETCH_WORDS * 64;

/// Refusals since the last summary, and roughly how many distinct clients they came from.
///
/// A window opens at the first refusal after a quiet spell and lasts [`SUMMARY_PERIOD_NANOS`].
/// The first decision after it ends, admission or refusal, closes it and logs its summary (the
/// limiter runs no timer of its own), and a refusal then opens the next.
///
/// Noting a refusal is two relaxed atomic operations and no lock. The client count is a
/// linear-counting sketch (one bit per client hash): exact in practice for a few hundred
/// clients, within a few percent for tens of thousands.
#[repr(align(128))]
pub(super) struct Summary {
    /// When (clock nanoseconds) the current window ends; 0 while no window is open.
    window_end: AtomicU64,
    refused: AtomicU64,
    sketch: [AtomicU64; SKETCH_WORDS],
    hasher: foldhash::fast::FixedState,
}

/// One finished window: what to log.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Window {
    pub(super) refused: u64,
    pub(super) clients: u64,
}

impl Summary {
    pub(super) fn new() -> Self {
        Summary {
            window_end: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            sketch: std::array::from_fn(|_| AtomicU64::new(0)),
            hasher: foldhash::fast::FixedState::with_seed(0x5eed_c0de),
        }
    }

    /// Notes a refusal of `client` at `now`. Returns `Opened` when this refusal opens a window
    /// (none was open), and the finished window when this refusal is the first after it ended.
    pub(super) fn note(&self, client: &ClientKey, now: u64) -> Noted {
        self.refused.fetch_add(1, Ordering::Relaxed);
        // The hash's top bits: foldhash mixes those best.
        let bit = (self.hasher.hash_one(client) >> (64 - SKETCH_BITS.trailing_zeros())) as usize;
        self.sketch[bit / 64].fetch_or(1 << (bit % 64), Ordering::Relaxed);
        let end = self.window_end.load(Ordering::Relaxed);
        if end == 0 {
            let opened = self
                .window_end
                .compare_exchange(
                    0,
                    now.saturating_add(SUMMARY_PERIOD_NANOS).max(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok();
            return if opened {
                Noted::Opened
            } else {
                Noted::Counted
            };
        }
        if now < end {
            return Noted::Counted;
        }
        match self.close_window(end, now.saturating_add(SUMMARY_PERIOD_NANOS).max(1)) {
            Some(window) => Noted::Closed(window),
            None => Noted::Counted,
        }
    }

    /// Closes the window that ends at `end` if it is over at `now`, with no window after it: for
    /// an admission, which ends a window when no refusal comes to do it.
    pub(super) fn close_if_over(&self, end: u64, now: u64) -> Option<Window> {
        if now < end {
            return None;
        }
        self.close_window(end, 0)
            .filter(|window| window.refused > 0)
    }

    /// The end of the window open now, if any.
    pub(super) fn window_end(&self) -> Option<u64> {
        Some(self.window_end.load(Ordering::Relaxed)).filter(|&end| end != 0)
    }

    /// Takes the counts of the window ending at `end`, and sets the next window's end to
    /// `next_end` (0: none). Only one caller wins a given window.
    fn close_window(&self, end: u64, next_end: u64) -> Option<Window> {
        self.window_end
            .compare_exchange(end, next_end, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        let refused = self.refused.swap(0, Ordering::Relaxed);
        let set_bits: u32 = self
            .sketch
            .iter()
            .map(|word| word.swap(0, Ordering::Relaxed).count_ones())
            .sum();
        Some(Window {
            refused,
            clients: estimate_distinct(set_bits).min(refused),
        })
    }
}

/// What noting a refusal did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Noted {
    /// Counted in the open window.
    Counted,
    /// Opened a window: the first refusal after a quiet spell.
    Opened,
    /// Ended the window before it; the new one is open.
    Closed(Window),
}

/// Linear counting: with `set` of `SKETCH_BITS` bits set by hashing, about
/// `-m ln(1 - set/m)` distinct values were seen.
fn estimate_distinct(set: u32) -> u64 {
    let m = SKETCH_BITS as f64;
    let zero = m - f64::from(set);
    if zero < 1.0 {
        // Saturated: at least this many.
        return (m * m.ln()) as u64;
    }
    (-m * (zero / m).ln()).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn key(n: u32) -> ClientKey {
        ClientKey::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)), 32, 64)
    }

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn a_window_opens_counts_and_closes_once() {
        let summary = Summary::new();
        assert_eq!(summary.note(&key(1), 5 * SEC), Noted::Opened);
        for n in 0..999 {
            assert_eq!(summary.note(&key(n % 3), 6 * SEC), Noted::Counted);
        }
        let closed = summary.note(&key(7), 15 * SEC);
        assert_eq!(
            closed,
            Noted::Closed(Window {
                refused: 1001,
                clients: 4
            })
        );
        assert_eq!(summary.window_end(), Some(25 * SEC));
        assert_eq!(
            summary.close_if_over(25 * SEC, 24 * SEC),
            None,
            "not over yet"
        );
        assert_eq!(
            summary.close_if_over(25 * SEC, 25 * SEC),
            None,
            "nothing to say"
        );
        assert_eq!(summary.window_end(), None);
        assert_eq!(summary.note(&key(1), 40 * SEC), Noted::Opened);
        let ended = summary.close_if_over(50 * SEC, 51 * SEC);
        assert_eq!(
            ended,
            Some(Window {
                refused: 1,
                clients: 1
            })
        );
    }

    #[test]
    fn distinct_clients_are_counted_closely() {
        for clients in [1u32, 10, 100, 1000, 10_000] {
            let summary = Summary::new();
            summary.note(&key(0), 0);
            for n in 0..clients {
                summary.note(&key(n), 1);
            }
            let Noted::Closed(window) = summary.note(&key(0), 20 * SEC) else {
                panic!("the window is over");
            };
            let error = window.clients.abs_diff(u64::from(clients)) as f64 / f64::from(clients);
            assert!(
                error <= 0.05,
                "{clients} clients counted as {}",
                window.clients
            );
        }
    }
}
