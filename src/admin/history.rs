//! The last five minutes, one sample a second, kept by the admin, so that its page draws its
//! charts from the first load and a new tab asks only for what it has not seen.

use std::collections::VecDeque;
use std::sync::{Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use super::AdminState;
use crate::Stats;

/// How many samples are kept: five minutes of one a second.
const KEPT: usize = 300;
const EVERY: Duration = Duration::from_secs(1);

/// One second of the limiter, as the page's charts read it.
struct Sample {
    /// Milliseconds since the Unix epoch.
    at_ms: u64,
    open_connections: usize,
    in_flight_requests: usize,
    /// The budgets in force (0: none), and with fair share, the connection level and
    /// watermark.
    max_conns_total: usize,
    max_requests_total: usize,
    level: Option<usize>,
    watermark: Option<usize>,
    /// Refusals so far, by reason, the non-zero ones.
    rejected: Vec<(&'static str, u64)>,
}

#[derive(Default)]
pub(super) struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    /// Keeps a sample of `stats` taken now.
    fn record(&self, stats: &Stats, budgets: (usize, usize)) {
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        let fair = stats.fair_share.as_ref().map(|fair| fair.connections);
        let sample = Sample {
            at_ms,
            open_connections: stats.open_connections,
            in_flight_requests: stats.in_flight_requests,
            max_conns_total: budgets.0,
            max_requests_total: budgets.1,
            level: fair.and_then(|budget| budget.level),
            watermark: fair.filter(|b| b.budget > 0).map(|budget| budget.watermark),
            rejected: stats.rejected.iter().filter(|(_, n)| *n > 0).collect(),
        };
        let mut samples = self.lock();
        if samples.len() == KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Sample>> {
        self.samples
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The samples taken after `since_ms`, oldest first, as JSON.
    pub(super) fn since(&self, since_ms: u64) -> Value {
        let samples: Vec<Value> = self
            .lock()
            .iter()
            .filter(|sample| sample.at_ms > since_ms)
            .map(|sample| {
                let rejected: Map<String, Value> = (sample.rejected.iter())
                    .map(|(name, n)| ((*name).to_owned(), json!(n)))
                    .collect();
                json!({
                    "t": sample.at_ms,
                    "open_connections": sample.open_connections,
                    "in_flight_requests": sample.in_flight_requests,
                    "max_conns_total": sample.max_conns_total,
                    "max_requests_total": sample.max_requests_total,
                    "level": sample.level,
                    "watermark": sample.watermark,
                    "rejected": rejected,
                })
            })
            .collect();
        json!({ "every_ms": EVERY.as_millis() as u64, "samples": samples })
    }
}

/// Takes a sample every second while the admin lives, on the runtime the router was built in
/// (none outside one: the page then keeps what it sees itself).
pub(super) fn keep(state: Weak<AdminState>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut every = tokio::time::interval(EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // Ends when the admin's router, and so its state, is dropped.
        loop {
            every.tick().await;
            let Some(state) = state.upgrade() else {
                return;
            };
            let config = state.limiter.config();
            let budgets = (config.max_conns_total, config.max_requests_total);
            state.history.record(&state.limiter.stats(), budgets);
        }
    });
}
