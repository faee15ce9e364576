//! Which clients each reason refused most, lately: for the operator's page, which lists them
//! when a reason is clicked.
//!
//! Per reason, a space-saving summary of [`TOP`] counters (Metwally et al.): a client already
//! counted is raised; a new one takes the place of the least counted, starting from its count,
//! so that a client refused often is never missed and the counts are over-estimates by at most
//! the least one kept. One refusal in [`SAMPLE`] is noted, weighing `SAMPLE`, under a lock that
//! a refusal only tries: a refusal never waits for it. The counts are halved every minute by the
//! sweeper, so that "most" means lately, and a flood that ended fades from the list.

use std::sync::Mutex;

use crate::key::ClientKey;

/// Clients kept per reason.
const TOP: usize = 16;

/// One refusal in this many is noted (by the refusal's count at its point).
pub(super) const SAMPLE: u64 = 4;

/// One reason's summary: the clients it refused most, each with its count, in place (a
/// refusal never allocates).
type Counts = [Option<(ClientKey, u64)>; TOP];

/// The most reasons summed up: the limiter's and the admission points' own, with room to spare.
const REASONS: usize = 32;

/// The summaries, by reason name, made with room for every reason.
pub(super) struct RefusedBy {
    reasons: Mutex<Vec<(&'static str, Counts)>>,
}

impl Default for RefusedBy {
    fn default() -> Self {
        RefusedBy {
            reasons: Mutex::new(Vec::with_capacity(REASONS)),
        }
    }
}

impl RefusedBy {
    /// Notes that `reason` refused `client`, if the summaries are free now.
    pub(super) fn note(&self, reason: &'static str, client: &ClientKey) {
        let Ok(mut reasons) = self.reasons.try_lock() else {
            return;
        };
        let counts = match reasons.iter().position(|(name, _)| *name == reason) {
            Some(i) => &mut reasons[i].1,
            // Within the room made at the start: no allocation.
            None if reasons.len() < REASONS => {
                reasons.push((reason, [None; TOP]));
                &mut reasons.last_mut().expect("just pushed").1
            }
            None => return,
        };
        if let Some(Some(counted)) = counts
            .iter_mut()
            .find(|c| c.is_some_and(|(key, _)| key == *client))
        {
            counted.1 += SAMPLE;
        } else if let Some(free) = counts.iter_mut().find(|c| c.is_none()) {
            *free = Some((*client, SAMPLE));
        } else if let Some(Some(least)) = counts.iter_mut().min_by_key(|c| c.map_or(0, |(_, n)| n))
        {
            *least = (*client, least.1 + SAMPLE);
        }
    }

    /// The clients `reason` refused most lately, most first, with about how many refusals each
    /// (an over-estimate by at most the least count kept).
    pub(super) fn top(&self, reason: &str, n: usize) -> Vec<(ClientKey, u64)> {
        let reasons = self
            .reasons
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut counts: Vec<_> = reasons
            .iter()
            .find(|(name, _)| *name == reason)
            .map(|(_, counts)| counts.iter().flatten().copied().collect())
            .unwrap_or_default();
        counts.sort_unstable_by_key(|(_, count)| std::cmp::Reverse(*count));
        counts.truncate(n);
        counts
    }

    /// Halves every count, forgetting the clients that reach 0.
    pub(super) fn fade(&self) {
        let mut reasons = self
            .reasons
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (_, counts) in reasons.iter_mut() {
            for counted in counts.iter_mut() {
                *counted = counted.and_then(|(key, n)| (n / 2 > 0).then_some((key, n / 2)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(n: u8) -> ClientKey {
        ClientKey::exact(std::net::IpAddr::from([192, 0, 2, n]))
    }

    #[test]
    fn the_most_refused_clients_are_kept_and_fade() {
        let refused = RefusedBy::default();
        // One client refused often among many refused once.
        for n in 0..100u8 {
            refused.note("banned", &client(n));
            refused.note("banned", &client(200));
        }
        refused.note("client_connections", &client(7));
        let top = refused.top("banned", 3);
        assert_eq!(top[0], (client(200), 100 * SAMPLE));
        assert_eq!(top.len(), 3);
        assert_eq!(refused.top("client_connections", 3), [(client(7), SAMPLE)]);
        assert!(refused.top("fair_share", 3).is_empty());
        for _ in 0..3 {
            refused.fade();
        }
        assert!(refused.top("client_connections", 3).is_empty(), "faded");
        assert_eq!(refused.top("banned", 1)[0].0, client(200));
    }
}
