//! The rate-limited warning that sums up refusals, so that a flood of them cannot flood the log.
//!
//! The first refusal after a quiet spell is logged on its own and opens a window of
//! [`SUMMARY_PERIOD_NANOS`]. The refusals after it are summed up when the window is closed, by
//! a decision (admission or refusal) soon after its end: the limiter runs no timer of its own,
//! and to keep the clock off the hot path only one in [`SAMPLE`] decisions looks. A window that
//! saw refusals opens the next at once; one that saw none ends the series, and the next refusal
//! is again "the first after a quiet spell".

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::key::ClientKey;

/// How long one summary window lasts.
pub(super) const SUMMARY_PERIOD_NANOS: u64 = 10_000_000_000;

/// One in this many decisions reads the clock to see whether an open window is over.
pub(super) const SAMPLE: u64 = 32;

/// Bits in the distinct-client sketch: 512 bytes, accurate within a few percent up to about
/// 20,000 clients, and a floor ("at least") past its saturation.
const SKETCH_WORDS: usize = 64;
const SKETCH_BITS: usize = SKETCH_WORDS * 64;

/// When the window open now ends (0: none), and how many refusals the limiter had counted when
/// it opened. On a cache line of its own: every decision reads `end` while a window is open.
#[repr(align(128))]
struct OpenWindow {
    end: AtomicU64,
    refused_before: AtomicU64,
}

/// Roughly which clients were refused in the open window: one bit per client hash (linear
/// counting). Written by refusals only, and only when a bit is not yet set.
#[repr(align(128))]
struct Sketch {
    words: [AtomicU64; SKETCH_WORDS],
    /// Randomly seeded: clients must not be able to choose keys that share a bit.
    hasher: foldhash::quality::RandomState,
}

pub(super) struct Summary {
    window: OpenWindow,
    sketch: Sketch,
}

/// One finished window: what to log.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Window {
    /// Refusals in the window, after the one that opened it.
    pub(super) refused: u64,
    /// About how many clients they came from.
    pub(super) clients: u64,
    /// Whether `clients` is only a floor: the sketch filled up.
    pub(super) at_least: bool,
    /// How long the window lasted, from its start to the decision that closed it, in seconds.
    pub(super) seconds: u64,
}

impl Summary {
    pub(super) fn new() -> Self {
        Summary {
            window: OpenWindow {
                end: AtomicU64::new(0),
                refused_before: AtomicU64::new(0),
            },
            sketch: Sketch {
                words: std::array::from_fn(|_| AtomicU64::new(0)),
                hasher: foldhash::quality::RandomState::default(),
            },
        }
    }

    /// The end of the window open now, if any.
    #[inline]
    pub(super) fn open_until(&self) -> Option<u64> {
        Some(self.window.end.load(Ordering::Relaxed)).filter(|&end| end != 0)
    }

    /// Opens a window at `now`, when none is open; `refused` is the limiter's refusal count so
    /// far, the opening refusal included. Returns whether this call opened it (so the caller
    /// logs the opening refusal).
    pub(super) fn open(&self, now: u64, refused: u64) -> bool {
        let opened = self
            .window
            .end
            .compare_exchange(0, end_after(now), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        if opened {
            self.window.refused_before.store(refused, Ordering::Relaxed);
        }
        opened
    }

    /// Notes that `client` was refused in the open window.
    #[inline]
    pub(super) fn note(&self, client: &ClientKey) {
        // The top bits of a well-mixed hash.
        let bit =
            (self.sketch.hasher.hash_one(client) >> (64 - SKETCH_BITS.trailing_zeros())) as usize;
        let (word, mask) = (&self.sketch.words[bit / 64], 1u64 << (bit % 64));
        // A flood from few clients finds its bits set: no write, the line stays shared.
        if word.load(Ordering::Relaxed) & mask == 0 {
            word.fetch_or(mask, Ordering::Relaxed);
        }
    }

    /// Closes the window ending at `end` if it is over at `now`; `refused` is the limiter's
    /// refusal count so far. Only one caller wins a window. Returns its summary when it saw
    /// refusals (and then the next window is open), `None` otherwise (and the series ends).
    pub(super) fn close_if_over(&self, end: u64, now: u64, refused: u64) -> Option<Window> {
        if now < end {
            return None;
        }
        self.window
            .end
            .compare_exchange(end, end_after(now), Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        let before = self.window.refused_before.swap(refused, Ordering::Relaxed);
        let set_bits: u32 = self
            .sketch
            .words
            .iter()
            .map(|word| word.swap(0, Ordering::Relaxed).count_ones())
            .sum();
        let in_window = refused.saturating_sub(before);
        if in_window == 0 {
            // Nothing since the window opened: end the series, unless someone opened anew.
            let _ = self.window.end.compare_exchange(
                end_after(now),
                0,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            return None;
        }
        let (clients, at_least) = estimate_distinct(set_bits);
        let start = end.saturating_sub(SUMMARY_PERIOD_NANOS);
        Some(Window {
            refused: in_window,
            clients: clients.clamp(1, in_window),
            at_least,
            seconds: (now.saturating_sub(start) / 1_000_000_000).max(1),
        })
    }
}

/// The end of a window opened at `now`; never 0, which means "none".
fn end_after(now: u64) -> u64 {
    now.saturating_add(SUMMARY_PERIOD_NANOS).max(1)
}

/// Linear counting: with `set` of `SKETCH_BITS` bits set by hashing, about
/// `-m ln(1 - set/m)` distinct values were seen. Past about 20,000 the estimate loses accuracy
/// quickly, so from there on it is reported as a floor.
fn estimate_distinct(set: u32) -> (u64, bool) {
    let m = SKETCH_BITS as f64;
    let zero = (m - f64::from(set)).max(1.0);
    let estimate = (-m * (zero / m).ln()).round() as u64;
    (estimate, estimate > 20_000)
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
    fn windows_roll_while_refusals_go_on_and_end_after_a_quiet_one() {
        let summary = Summary::new();
        assert_eq!(summary.open_until(), None);
        assert!(summary.open(5 * SEC, 1), "the first refusal opens a window");
        assert!(!summary.open(5 * SEC, 2), "only once");
        for n in 0..999 {
            summary.note(&key(n % 3));
        }
        assert_eq!(
            summary.close_if_over(15 * SEC, 14 * SEC, 1000),
            None,
            "not over yet"
        );
        let window = summary.close_if_over(15 * SEC, 16 * SEC, 1000).unwrap();
        assert_eq!(
            window,
            Window {
                refused: 999,
                clients: 3,
                at_least: false,
                seconds: 11
            }
        );
        assert_eq!(
            summary.close_if_over(15 * SEC, 16 * SEC, 1000),
            None,
            "closed once"
        );
        assert_eq!(
            summary.open_until(),
            Some(26 * SEC),
            "the next window is open"
        );
        assert_eq!(
            summary.close_if_over(26 * SEC, 30 * SEC, 1000),
            None,
            "a quiet window"
        );
        assert_eq!(summary.open_until(), None, "ends the series");
        assert!(summary.open(40 * SEC, 1001), "the next refusal opens anew");
    }

    #[test]
    fn distinct_clients_are_counted_closely_and_a_flood_is_a_floor() {
        for clients in [1u32, 10, 100, 1000, 10_000] {
            let summary = Summary::new();
            summary.open(0, 0);
            for n in 0..clients {
                summary.note(&key(n));
            }
            let window = summary
                .close_if_over(10 * SEC, 10 * SEC, 1_000_000)
                .unwrap();
            let error = window.clients.abs_diff(u64::from(clients)) as f64 / f64::from(clients);
            // Four or more standard errors of linear counting: a random seed cannot fail it.
            let tolerance = if clients <= 1000 { 0.05 } else { 0.1 };
            // (A handful of clients may share a bit: one fewer is within the estimate.)
            let off_by_one = window.clients.abs_diff(u64::from(clients)) <= 1;
            assert!(
                error <= tolerance || off_by_one,
                "{clients} clients counted as {}",
                window.clients
            );
            assert!(!window.at_least);
        }
        let summary = Summary::new();
        summary.open(0, 0);
        for n in 0..100_000 {
            summary.note(&key(n));
        }
        let window = summary
            .close_if_over(10 * SEC, 10 * SEC, 1_000_000)
            .unwrap();
        assert!(window.at_least && window.clients > 20_000, "{window:?}");
    }
}
