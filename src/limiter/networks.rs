//! How many client keys each wider network holds, so that one network's many keys (an IPv6
//! /48 holds 65,536 /64 clients) cannot fill the table or rotate past a rate rule: past
//! [`Config::max_keys_per_network`](crate::Config::max_keys_per_network), the network's further
//! addresses are counted together under the network's own key (`admit.rs`).

use super::Limiter;
use crate::key::ClientKey;

impl Limiter {
    /// Counts one more key in `network` if it holds fewer than `cap`; whether it did.
    pub(super) fn join_network(&self, network: ClientKey, cap: usize) -> bool {
        let mut keys = self.shared.networks.entry(network).or_insert(0);
        if (*keys as usize) < cap {
            *keys += 1;
            true
        } else {
            false
        }
    }

    /// Takes `key`, counted in its network of `prefix` bits, out of that network's count.
    pub(super) fn leave_network(&self, key: &ClientKey, prefix: u8) {
        let network = ClientKey::new(key.network(), prefix, prefix);
        let networks = &self.shared.networks;
        networks.remove_if_mut(&network, |_, keys| {
            *keys = keys.saturating_sub(1);
            *keys == 0
        });
    }
}
