//! The clients the limiter tracks: one client's details, listings, and manual bans.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::sharing::{BanNote, Banned};
use super::{ClientStats, Limiter, NetworkBan};
use crate::ban::{Ban, BanReason};
use crate::cidr::Cidr;
use crate::clock::nanos;
use crate::key::ClientKey;

impl Limiter {
    /// Bans `ip`'s client key for `duration`, from now; an existing longer ban stays. A banned
    /// client is refused everywhere: the listener closes it at accept. With a fleet joined, the
    /// ban reaches every node. Its reason reads "banned by the operator":
    /// [`Limiter::ban_with_reason`] records your own.
    pub fn ban(&self, ip: IpAddr, duration: Duration) {
        self.ban_with_reason(ip, duration, BanReason::operator());
    }

    /// [`Limiter::ban`], recording `reason` with the ban (see [`BanReason::given`] to make one
    /// from an operator's words): [`Limiter::bans`] shows it while the ban runs.
    pub fn ban_with_reason(&self, ip: IpAddr, duration: Duration, reason: BanReason) {
        self.ban_client(self.key_for(ip), duration, reason);
    }

    /// Bans the client `key` for `duration`, from now, for `reason`: an address's key, a
    /// network's, or a request key's ([`RequestKey::client_key`](crate::keys::RequestKey::client_key),
    /// or `key:…` as stats print it), whose keyed requests are then refused from any address.
    pub fn ban_client(&self, key: ClientKey, duration: Duration, reason: BanReason) {
        let now = self.now();
        let until = now.saturating_add(nanos(duration));
        tracing::info!(client = %key, ?duration, reason = %reason, "client banned by the operator");
        self.ban_key(key, now, until, reason);
        self.shared.counters.bans.fetch_add(1, Ordering::Relaxed);
        self.shared.outbox.ban(BanNote::Banned(Banned::Client(key)));
    }

    /// Bans `key` until `until` (clock nanoseconds), decided at `now`, for `reason`.
    pub(super) fn ban_key(&self, key: ClientKey, now: u64, until: u64, reason: BanReason) {
        let shared = &*self.shared;
        loop {
            if let Some(record) = shared.clients.get(&key) {
                let entry = record.key().entry();
                entry.record.ban_until(until, now, reason);
                entry.mark_banned(true);
                break;
            }
            // A manual ban is always recorded, even past `max_tracked_clients` and the
            // network's keys.
            self.insert(key, 0, None);
        }
    }

    /// Lifts the ban on `ip`'s client key and forgets its violations and earlier bans. Returns
    /// whether it was banned. With a fleet joined, every node lifts it.
    pub fn unban(&self, ip: IpAddr) -> bool {
        self.unban_client(self.key_for(ip))
    }

    /// Lifts the ban on the client `key` (see [`Limiter::ban_client`]); whether it was banned.
    pub fn unban_client(&self, key: ClientKey) -> bool {
        self.shared
            .outbox
            .ban(BanNote::Unbanned(Banned::Client(key)));
        self.unban_key(key)
    }

    /// Lifts the ban on `key`; whether it was banned.
    pub(super) fn unban_key(&self, key: ClientKey) -> bool {
        let now = self.now();
        let was_banned = match self.shared.clients.get(&key) {
            Some(record) => {
                let entry = record.key().entry();
                let was_banned = entry.record.banned_until() > now;
                entry.record.unban();
                entry.mark_banned(false);
                was_banned
            }
            None => return false,
        };
        self.forget_if(&key, |entry| entry.is_forgettable(now));
        was_banned
    }

    /// Bans every client in `network` for `duration`, from now: those tracked now, and those
    /// arriving while the ban runs (each is banned as it is first tracked, so admissions of
    /// clients outside every banned network pay nothing for it). An existing longer ban stays.
    /// Its reason reads "banned by the operator": [`Limiter::ban_network_with_reason`] records
    /// your own.
    pub fn ban_network(&self, network: Cidr, duration: Duration) {
        self.ban_network_with_reason(network, duration, BanReason::operator());
    }

    /// [`Limiter::ban_network`], recording `reason` with the network's ban and its clients'.
    pub fn ban_network_with_reason(&self, network: Cidr, duration: Duration, reason: BanReason) {
        let now = self.now();
        let until = now.saturating_add(nanos(duration));
        tracing::info!(%network, ?duration, reason = %reason, "network banned by the operator");
        self.ban_network_until(network, now, until, reason);
        self.shared.counters.bans.fetch_add(1, Ordering::Relaxed);
        self.shared
            .outbox
            .ban(BanNote::Banned(Banned::Network(network)));
    }

    /// Bans `network` and the clients tracked in it until `until` (clock nanoseconds), decided
    /// at `now`, for `reason`.
    pub(super) fn ban_network_until(&self, network: Cidr, now: u64, until: u64, reason: BanReason) {
        {
            let mut bans = self.network_bans();
            let longer = bans
                .iter()
                .find(|ban| ban.network == network && ban.until > until)
                .map(|ban| (ban.until, ban.reason.clone()));
            bans.retain(|ban| ban.network != network && ban.until > now);
            let (until, reason) = longer.unwrap_or((until, reason.clone()));
            bans.push(NetworkBan {
                network,
                until,
                reason,
            });
            self.shared.any_network_ban.store(true, Ordering::Relaxed);
        }
        for key in self.keys_within(network) {
            self.ban_key(key, now, until, reason.clone());
        }
    }

    /// Lifts the ban on `network` (as [`Limiter::ban_network`] made it) and on every client in
    /// it. Returns whether the network was banned. With a fleet joined, every node lifts it.
    pub fn unban_network(&self, network: Cidr) -> bool {
        self.shared
            .outbox
            .ban(BanNote::Unbanned(Banned::Network(network)));
        self.lift_network(network)
    }

    /// Lifts the ban on `network` and its clients; whether the network was banned.
    pub(super) fn lift_network(&self, network: Cidr) -> bool {
        let now = self.now();
        let was_banned = {
            let mut bans = self.network_bans();
            let before = bans.len();
            bans.retain(|ban| ban.network != network && ban.until > now);
            bans.len() < before
        };
        for key in self.keys_within(network) {
            self.unban_key(key);
        }
        was_banned
    }

    /// The networks banned now, each with the time its ban has left and its reason.
    pub fn banned_networks(&self) -> Vec<(Cidr, Ban)> {
        let now = self.now();
        self.network_bans()
            .iter()
            .filter(|ban| ban.until > now)
            .map(|ban| {
                let left = Duration::from_nanos(ban.until - now);
                let reason = ban.reason.clone();
                (ban.network, Ban { left, reason })
            })
            .collect()
    }

    /// The network bans, locked.
    fn network_bans(&self) -> std::sync::MutexGuard<'_, Vec<NetworkBan>> {
        self.shared
            .network_bans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The tracked keys that lie wholly in `network`.
    fn keys_within(&self, network: Cidr) -> Vec<ClientKey> {
        self.shared
            .clients
            .iter()
            .map(|record| record.key().entry().key)
            .filter(|key| within(key, network))
            .collect()
    }

    /// Bans a newly tracked `key` if a running network ban covers it, until the latest end of
    /// those that do, with that ban's reason.
    pub(super) fn ban_if_in_banned_network(&self, key: ClientKey) {
        let now = self.now();
        if let Some((until, reason)) = self.network_ban_of(&key, now) {
            self.ban_key(key, now, until, reason);
        }
    }

    /// The running network ban covering `key` at `now` that ends last: its end and reason.
    pub(super) fn network_ban_of(&self, key: &ClientKey, now: u64) -> Option<(u64, BanReason)> {
        if !self.shared.any_network_ban.load(Ordering::Relaxed) {
            return None;
        }
        self.network_bans()
            .iter()
            .filter(|ban| ban.until > now && within(key, ban.network))
            .max_by_key(|ban| ban.until)
            .map(|ban| (ban.until, ban.reason.clone()))
    }

    /// The clients banned now, each with the time its ban has left and its reason.
    pub fn bans(&self) -> Vec<(ClientKey, Ban)> {
        let now = self.now();
        self.shared
            .clients
            .iter()
            .filter_map(|record| {
                let entry = record.key().entry();
                let until = entry.record.banned_until();
                let reason = BanReason::clone(&*entry.record.ban_reason(now)?);
                let left = Duration::from_nanos(until.saturating_sub(now));
                Some((entry.key, Ban { left, reason }))
            })
            .collect()
    }

    /// The number of open connections counted for `ip`'s client key (so, with the default
    /// `/64`, for the whole IPv6 subnet).
    pub fn open_connections(&self, ip: IpAddr) -> usize {
        self.client(ip).map_or(0, |c| c.open_connections)
    }

    /// The details of `ip`'s client key: its open connections, in-flight requests and ban, or
    /// `None` when nothing about it is tracked. An address of a network that holds
    /// [`max_keys_per_network`](crate::Config::max_keys_per_network) keys, none of them its
    /// own, is counted under the network's key: that key's details, then.
    pub fn client(&self, ip: IpAddr) -> Option<ClientStats> {
        let key = self.key_for(ip);
        let now = self.now();
        let shared = &*self.shared;
        let record = match shared.clients.get(&key) {
            Some(record) => record,
            None => {
                let (network, cap) = self.installed().limits.network_of(&key)?;
                let full = shared
                    .networks
                    .get(&network)
                    .is_some_and(|keys| *keys as usize >= cap);
                if !full {
                    return None;
                }
                shared.clients.get(&network)?
            }
        };
        let entry = record.key().entry();
        (!entry.is_forgettable(now)).then(|| ClientStats::new(entry, now))
    }

    /// Every tracked client and its counts, in no particular order: the clients with something
    /// open, or a rate or ban record the limiter still keeps.
    ///
    /// Takes each shard's read lock in turn; meant for stats endpoints and debugging, not for
    /// the request path.
    pub fn clients(&self) -> Vec<ClientStats> {
        let now = self.now();
        self.shared
            .clients
            .iter()
            .filter(|record| !record.key().entry().is_forgettable(now))
            .map(|record| ClientStats::new(record.key().entry(), now))
            .collect()
    }

    /// The `n` clients holding the most open connections, most first; ties go to the client with
    /// more requests in flight. Clients with nothing open are left out, so the list may be
    /// shorter than `n`.
    ///
    /// Reads every entry (each shard's read lock in turn) and keeps only `n` of them, so it
    /// costs one pass over the map and memory for `n` results: fine for a stats endpoint or a
    /// periodic log, not for the request path.
    pub fn top_clients(&self, n: usize) -> Vec<ClientStats> {
        if n == 0 {
            return Vec::new();
        }
        let now = self.now();
        // A min-heap of the best `n` so far: the weakest is on top, ready to be pushed out.
        let mut best = BinaryHeap::new();
        for record in self.shared.clients.iter() {
            let entry = record.key().entry();
            let (connections, requests) = entry.counts();
            if (connections, requests) == (0, 0) {
                continue;
            }
            // Ranked on the counts first: a client's record is read only if it makes the list.
            let rank = (connections, requests, Reverse(entry.key));
            let weakest = best
                .peek()
                .map(|Reverse(ranked): &Reverse<Ranked>| ranked.rank());
            if best.len() == n && weakest.is_some_and(|weakest| rank <= weakest) {
                continue;
            }
            best.push(Reverse(Ranked(ClientStats::new(entry, now))));
            if best.len() > n {
                best.pop();
            }
        }
        best.into_sorted_vec()
            .into_iter()
            .map(|Reverse(Ranked(client))| client)
            .collect()
    }
}

/// Whether every address of `key` lies in `network`.
pub(super) fn within(key: &ClientKey, network: Cidr) -> bool {
    key.prefix_len() >= network.prefix_len() && network.contains(key.network())
}

/// A client ranked for [`Limiter::top_clients`]: most connections, then most requests, then
/// the lowest key, so that the order is stable.
struct Ranked(ClientStats);

impl Ranked {
    fn rank(&self) -> (usize, usize, Reverse<ClientKey>) {
        let c = &self.0;
        (c.open_connections, c.in_flight_requests, Reverse(c.key))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.rank() == other.rank()
    }
}

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}
