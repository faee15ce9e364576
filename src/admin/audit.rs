//! [`Audit`]: who changed what through the admin API, and when, in a bounded list.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// The most recent changes, oldest dropped first.
#[derive(Debug)]
pub(super) struct Audit {
    entries: Mutex<VecDeque<Value>>,
    capacity: usize,
}

impl Audit {
    pub(super) fn new(capacity: usize) -> Self {
        Audit {
            entries: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity: capacity.max(1),
        }
    }

    /// Records that `who` did `action` (`ban`, `unban`, `config`), with `detail`; logs it too.
    pub(super) fn record(&self, who: &str, action: &str, detail: Value) {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        tracing::info!(who, action, %detail, "admin change");
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() == self.capacity {
            entries.pop_front();
        }
        entries.push_back(json!({ "at": at, "who": who, "action": action, "detail": detail }));
    }

    /// Every entry kept, oldest first.
    pub(super) fn list(&self) -> Vec<Value> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}
