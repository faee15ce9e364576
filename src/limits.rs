//! The limits part of the config: the rule types ([`CidrLimit`], [`WhenFull`]), and [`Limits`],
//! the limits as every decision reads them, checked and prepared once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::ban::BanPolicy;
use crate::cidr::Cidr;
use crate::cidr_table::{CidrTable, Overlap};
use crate::error::ConfigError;
use crate::fair_share::{Budget, FairShare};
use crate::key::ClientKey;
use crate::keys::{KeyConfig, RequestKey};
use crate::rate::{PathRule, RateLimit};

/// The most path rules one config may have: a decision notes which of them a request matches in
/// one 64-bit set.
pub(crate) const MAX_PATH_RULES: usize = 64;

/// What happens when a new client arrives and [`Config::max_tracked_clients`] are tracked.
///
/// In config files: `evict_stalest`, `refuse_new`.
///
/// [`Config::max_tracked_clients`]: crate::Config::max_tracked_clients
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum WhenFull {
    /// Forget a client that has nothing open to make room, drawn from the whole table: one
    /// with nothing left to remember if the sample holds one, else the one a rule looked at
    /// longest ago, of 32 drawn at random. A running ban is never forgotten. The default: honest
    /// newcomers keep getting in, and an attacker rotating addresses only pushes out the
    /// stalest records. Evictions are counted in [`Stats::evictions`](crate::Stats::evictions).
    #[default]
    EvictStalest,
    /// Refuse the new client (503 at the layer) until room frees up. Nothing is ever forgotten
    /// early, at the cost of locking out newcomers while the map is full.
    RefuseNew,
}

/// A per-network replacement of [`Config::max_conns_per_client`].
///
/// Each client in `network` (still keyed by its own prefix-masked address) may hold
/// `max_conns_per_client` connections; 0 means unlimited.
///
/// [`Config::max_conns_per_client`]: crate::Config::max_conns_per_client
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct CidrLimit {
    /// The network this limit applies to.
    pub network: Cidr,
    /// The per-client connection limit inside `network`.
    pub max_conns_per_client: usize,
}

impl CidrLimit {
    /// A limit of `max_conns_per_client` for clients in `network`.
    pub fn new(network: Cidr, max_conns_per_client: usize) -> Self {
        CidrLimit {
            network,
            max_conns_per_client,
        }
    }
}

/// What a connection or request is: what each limit and budget is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Connection,
    Request,
}

impl Kind {
    /// A stable name, for log fields.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Connection => "connection",
            Kind::Request => "request",
        }
    }
}

/// The limits as every decision reads them: the limit fields of [`Config`](crate::Config),
/// checked, with the networks prepared for longest-prefix lookups. Built once per installed
/// config; the field names are the config's, and so are the field paths in its errors.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    pub(crate) max_conns_per_client: usize,
    pub(crate) max_conns_total: usize,
    pub(crate) max_requests_per_client: usize,
    pub(crate) max_requests_total: usize,
    pub(crate) fair_share: FairShare,
    pub(crate) ipv4_prefix: u8,
    pub(crate) ipv6_prefix: u8,
    pub(crate) exempt: Vec<Cidr>,
    pub(crate) overrides: Vec<CidrLimit>,
    pub(crate) trusted_proxies: Vec<Cidr>,
    pub(crate) connect_rate: Option<RateLimit>,
    pub(crate) request_rate: Option<RateLimit>,
    pub(crate) path_rules: Vec<PathRule>,
    pub(crate) ban: Option<BanPolicy>,
    pub(crate) max_tracked_clients: usize,
    pub(crate) when_full: WhenFull,
    pub(crate) max_keys_per_network: usize,
    pub(crate) network_ipv4_prefix: u8,
    pub(crate) network_ipv6_prefix: u8,
    pub(crate) keys: KeyConfig,
    /// What [`Limits::compile`] prepares: empty before.
    pub(crate) lookups: Lookups,
}

/// The limits' networks as tables for longest-prefix lookups, and the config's generation.
#[derive(Clone, Debug, Default)]
pub(crate) struct Lookups {
    /// Distinct for every compiled config, so that what a client's record worked out under an
    /// earlier config (its limit, its path states) is worked out afresh.
    pub(crate) generation: u64,
    /// Per [`Kind`]: whether decisions count connections (requests) in the limiter's global
    /// count: while a global budget is in force, or being put in force.
    count_total: [bool; 2],
    /// Per [`Kind`]: the global budget, as decisions read it.
    budgets: [Budget; 2],
    exempt: CidrTable<()>,
    overrides: CidrTable<usize>,
    trusted_proxies: CidrTable<()>,
    /// The limits of keyed requests, each tier's and their addresses'.
    keyed: Arc<KeyedLimits>,
    /// Set on a tier's limits, and on those of a keyed request's address: limits whose request
    /// rule is not the config's, which a fleet does not count by.
    pub(crate) derived: bool,
    /// Set on the limits of a keyed request's address: its requests are counted apart from the
    /// global count, which counts each keyed request under its key.
    pub(crate) apart: bool,
}

/// The limits a keyed request's decisions are made on: [`Limits`] like the config's, with the
/// request limit and rate replaced by a tier's, or by those of a keyed request's address.
/// Everything else (path rules, bans, the generation) is the config's, so that a key's record
/// is worked out the same way whatever its tier.
#[derive(Debug, Default)]
pub(crate) struct KeyedLimits {
    tiers: Vec<Limits>,
    by_name: HashMap<String, usize>,
    assigned: HashMap<ClientKey, usize>,
    default_tier: Option<usize>,
    /// A keyed request's address's limits (none but a ban, unless `limits_addresses`). An
    /// `Option` only so that the default, before compiling, holds no `Limits`, whose own
    /// default holds a `KeyedLimits`.
    address: Option<Box<Limits>>,
    limits_addresses: bool,
}

impl KeyedLimits {
    /// The limits of `key`: the tier it names, else its assigned tier, else the default tier,
    /// else `base` itself. Also whether it named a tier the config does not have.
    pub(crate) fn of<'a>(&'a self, key: &RequestKey, base: &'a Limits) -> (&'a Limits, bool) {
        let named = key.tier_name().map(|name| self.by_name.get(name));
        let tier = match named {
            Some(Some(&tier)) => Some(tier),
            _ => self
                .assigned
                .get(&key.client_key())
                .copied()
                .or(self.default_tier),
        };
        let limits = tier.map_or(base, |tier| &self.tiers[tier]);
        (limits, matches!(named, Some(None)))
    }

    /// The limits a keyed request's address is held to, and whether there is any beyond a
    /// ban.
    pub(crate) fn address(&self) -> (&Limits, bool) {
        let address = self.address.as_deref().expect("compiled limits");
        (address, self.limits_addresses)
    }
}

impl Default for Limits {
    /// Every limit's default, as [`Config::default`](crate::Config::default) takes them: 100
    /// connections per client (go-connlimit's and Nomad's default), everything else unlimited
    /// or off, clients keyed per IPv4 address and per IPv6 /64, and at most 1,000,000 clients
    /// tracked.
    fn default() -> Self {
        Limits {
            max_conns_per_client: 100,
            max_conns_total: 0,
            max_requests_per_client: 0,
            max_requests_total: 0,
            fair_share: FairShare::default(),
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            exempt: Vec::new(),
            overrides: Vec::new(),
            trusted_proxies: Vec::new(),
            connect_rate: None,
            request_rate: None,
            path_rules: Vec::new(),
            ban: None,
            max_tracked_clients: 1_000_000,
            when_full: WhenFull::EvictStalest,
            max_keys_per_network: 256,
            network_ipv4_prefix: 24,
            network_ipv6_prefix: 48,
            keys: KeyConfig::default(),
            lookups: Lookups::default(),
        }
    }
}

impl Limits {
    /// Checks every limit and prepares them for decisions.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first offending field.
    pub(crate) fn compile(mut self) -> Result<Self, ConfigError> {
        self.validate()?;
        static GENERATIONS: AtomicU64 = AtomicU64::new(1);
        self.lookups = Lookups {
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
            count_total: [self.max_conns_total != 0, self.max_requests_total != 0],
            budgets: [
                (self.fair_share).budget(self.max_conns_total, self.fair_share.ceiling),
                (self.fair_share).budget(self.max_requests_total, self.fair_share.request_ceiling),
            ],
            exempt: CidrTable::new(self.exempt.iter().map(|&c| (c, ()))),
            overrides: CidrTable::new(
                self.overrides
                    .iter()
                    .map(|o| (o.network, o.max_conns_per_client)),
            ),
            trusted_proxies: CidrTable::new(self.trusted_proxies.iter().map(|&c| (c, ()))),
            keyed: Arc::default(),
            derived: false,
            apart: false,
        };
        self.lookups.keyed = Arc::new(self.keyed_limits());
        Ok(self)
    }

    /// Each tier's limits, and a keyed request's address's, on these (compiled) limits.
    fn keyed_limits(&self) -> KeyedLimits {
        let with_requests = |max_requests: usize, rate: Option<RateLimit>| {
            let mut limits = self.clone();
            limits.max_requests_per_client = max_requests;
            limits.request_rate = rate;
            limits.lookups.derived = true;
            limits
        };
        // A keyed request is counted in the request budget once, under its key: its address's
        // count is no second place in it.
        let address_limits = |max_requests: usize, rate: Option<RateLimit>| {
            let mut limits = with_requests(max_requests, rate);
            limits.max_requests_total = 0;
            limits.lookups.count_total[Kind::Request as usize] = false;
            limits.lookups.budgets[Kind::Request as usize] = Budget::default();
            limits.lookups.apart = true;
            limits
        };
        let keys = &self.keys;
        let index = |name: &str| keys.tiers.iter().position(|tier| tier.name == name);
        KeyedLimits {
            tiers: keys
                .tiers
                .iter()
                .map(|tier| with_requests(tier.max_requests, tier.request_rate))
                .collect(),
            by_name: (keys.tiers.iter().enumerate())
                .map(|(i, tier)| (tier.name.clone(), i))
                .collect(),
            assigned: (keys.assigned.iter())
                .filter_map(|assigned| Some((assigned.key, index(&assigned.tier)?)))
                .collect(),
            default_tier: keys.default_tier.as_deref().and_then(index),
            address: Some(Box::new(address_limits(
                keys.max_requests_per_address,
                keys.request_rate_per_address,
            ))),
            limits_addresses: keys.limits_addresses(),
        }
    }

    /// The limits of keyed requests.
    #[inline]
    pub(crate) fn keyed(&self) -> &KeyedLimits {
        &self.lookups.keyed
    }

    /// Checks every limit.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first offending field.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        for (field, prefix, bits) in [
            ("ipv4_prefix", self.ipv4_prefix, 32),
            ("ipv6_prefix", self.ipv6_prefix, 128),
            ("network_ipv4_prefix", self.network_ipv4_prefix, 32),
            ("network_ipv6_prefix", self.network_ipv6_prefix, 128),
        ] {
            if prefix > bits {
                return Err(ConfigError::new(
                    field,
                    format!("must be at most {bits}, got {prefix}"),
                ));
            }
        }
        if let Some(rule) = &self.connect_rate {
            rule.validate("connect_rate")?;
        }
        if let Some(rule) = &self.request_rate {
            rule.validate("request_rate")?;
        }
        if self.path_rules.len() > MAX_PATH_RULES {
            return Err(ConfigError::new(
                "path_rules",
                format!(
                    "at most {MAX_PATH_RULES} rules, got {}: a decision checks each one",
                    self.path_rules.len()
                ),
            ));
        }
        for (i, rule) in self.path_rules.iter().enumerate() {
            rule.validate(i)?;
            let named_before = |other: &PathRule| other.name.is_some() && other.name == rule.name;
            if self.path_rules[..i].iter().any(named_before) {
                return Err(ConfigError::new(
                    format!("path_rules[{i}].name"),
                    "another path rule has this name",
                ));
            }
        }
        if let Some(ban) = &self.ban {
            ban.validate()?;
        }
        self.fair_share.validate(
            (self.max_conns_per_client, self.max_conns_total),
            (self.max_requests_per_client, self.max_requests_total),
        )?;
        self.keys.validate()?;
        if let (Some(address), Some(own)) =
            (&self.keys.request_rate_per_address, &self.request_rate)
        {
            if address.strategy != own.strategy {
                return Err(ConfigError::new(
                    "keys.request_rate_per_address.strategy",
                    format!(
                        "must be request_rate's, {:?}: an address's requests, keyed or not, \
                         share one count",
                        own.strategy.as_str()
                    ),
                ));
            }
        }
        no_repeats("exempt", &self.exempt, |c| *c)?;
        if let Some((i, o)) = self
            .overrides
            .iter()
            .enumerate()
            .find(|(_, o)| o.network.prefix_len() > self.client_prefix_for(o.network.network()))
        {
            let (field, prefix) = match o.network.network() {
                IpAddr::V4(_) => ("ipv4_prefix", self.ipv4_prefix),
                IpAddr::V6(_) => ("ipv6_prefix", self.ipv6_prefix),
            };
            return Err(ConfigError::new(
                format!("overrides[{i}].network"),
                format!(
                    "{} is narrower than a client: {field} is /{prefix}, so clients are counted \
                     per /{prefix} and a limit must cover whole clients",
                    o.network
                ),
            ));
        }
        no_repeats("overrides", &self.overrides, |o| o.network)
            .map_err(|err| ConfigError::new(format!("{}.network", err.field()), err.reason()))?;
        no_repeats("trusted_proxies", &self.trusted_proxies, |c| *c)
    }

    /// The client prefix length for `ip`'s family.
    fn client_prefix_for(&self, ip: IpAddr) -> u8 {
        match ip {
            IpAddr::V4(_) => self.ipv4_prefix,
            IpAddr::V6(_) => self.ipv6_prefix,
        }
    }

    /// Whether decisions count `kind` in the global count.
    #[inline]
    pub(crate) fn counts_total(&self, kind: Kind) -> bool {
        self.lookups.count_total[kind as usize]
    }

    /// The global budget of `kind`.
    #[inline]
    pub(crate) fn budget(&self, kind: Kind) -> &Budget {
        &self.lookups.budgets[kind as usize]
    }

    /// The same limits with no global budget, but counting connections and requests in the
    /// global counts where `self` has a budget: what is in force while a budget is being put
    /// in force.
    pub(crate) fn counting_only(&self) -> Limits {
        let mut limits = self.clone();
        limits.max_conns_total = 0;
        limits.max_requests_total = 0;
        limits.lookups.budgets = Default::default();
        limits
    }

    /// Whether fair share asks heavy clients for idle connections back.
    pub(crate) fn reclaims(&self) -> bool {
        self.budget(Kind::Connection).fair && self.fair_share.reclaim
    }

    /// Whether putting `self` in force after `before` starts a global count: decisions made
    /// on `before` may have admitted what the count must then take in.
    pub(crate) fn starts_counting(&self, before: &Limits) -> bool {
        (0..2).any(|k| self.lookups.count_total[k] && !before.lookups.count_total[k])
    }

    /// Whether any rule depends on time, so decisions must read the clock.
    #[inline]
    pub(crate) fn has_rates(&self) -> bool {
        self.connect_rate.is_some() || self.request_rate.is_some() || !self.path_rules.is_empty()
    }

    /// The key a client at `ip` is counted under: its address masked to the configured prefix
    /// (an exempt client's is its exact address; see [`Limits::exempt_overlap`]).
    #[inline]
    pub(crate) fn key(&self, ip: IpAddr) -> ClientKey {
        ClientKey::new(ip, self.ipv4_prefix, self.ipv6_prefix)
    }

    /// The wider network `key` counts in, and how many keys it may hold, when keys per network
    /// are bounded and the network is wider than `key`.
    pub(crate) fn network_of(&self, key: &ClientKey) -> Option<(ClientKey, usize)> {
        if self.max_keys_per_network == 0 {
            return None;
        }
        let network = ClientKey::new(
            key.network(),
            self.network_ipv4_prefix,
            self.network_ipv6_prefix,
        );
        // A network that cannot hold more keys than the bound (a /24 of /32 clients under the
        // default 256) needs no count.
        let span = u32::from(key.prefix_len().saturating_sub(network.prefix_len()));
        let holds_more = span >= usize::BITS || (1usize << span) > self.max_keys_per_network;
        holds_more.then_some((network, self.max_keys_per_network))
    }

    /// Whether `ip` is exempt. An exempt client is keyed by its exact address, not by the
    /// configured prefix: its connections are counted but must not use up the allowance of the
    /// non-exempt neighbours sharing its /64 (or IPv4 prefix).
    #[inline]
    pub(crate) fn is_exempt(&self, ip: IpAddr) -> bool {
        self.lookups.exempt.contains(ip)
    }

    /// Whether the addresses of `key` are exempt: none, some, or all of them.
    pub(crate) fn exempt_overlap(&self, key: ClientKey) -> Overlap {
        self.lookups.exempt.overlap(Cidr::from(key))
    }

    /// Whether `ip` is one of the trusted proxies.
    #[inline]
    pub(crate) fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.lookups.trusted_proxies.contains(ip)
    }

    /// Whether every address of `key` is a trusted proxy.
    pub(crate) fn is_trusted_proxy_key(&self, key: ClientKey) -> bool {
        self.lookups.trusted_proxies.overlap(Cidr::from(key)) == Overlap::Fully
    }

    /// The per-client connection limit for `ip`: the longest matching override, else the default.
    /// (An override never splits a client, so every address of a key has the same limit.)
    #[inline]
    pub(crate) fn conn_limit_for(&self, ip: IpAddr) -> usize {
        self.lookups
            .overrides
            .longest(ip)
            .map_or(self.max_conns_per_client, |(_, limit)| *limit)
    }
}

/// Refuses a network listed twice in `field`: a second entry would silently shadow the first.
fn no_repeats<T>(
    field: &str,
    items: &[T],
    network: impl Fn(&T) -> Cidr,
) -> Result<(), ConfigError> {
    for (i, item) in items.iter().enumerate() {
        let item = network(item);
        if let Some(first) = items[..i]
            .iter()
            .position(|earlier| network(earlier) == item)
        {
            return Err(ConfigError::new(
                format!("{field}[{i}]"),
                format!("{item} is already listed at {field}[{first}]"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_past_the_family_are_refused() {
        let err = Limits {
            ipv6_prefix: 129,
            ..Limits::default()
        }
        .compile()
        .unwrap_err();
        assert_eq!(err.field(), "ipv6_prefix");
        assert_eq!(err.reason(), "must be at most 128, got 129");
    }

    #[test]
    fn duplicate_networks_are_refused_with_their_index() {
        let err = Limits {
            overrides: vec![
                CidrLimit::new(cidr("10.0.0.0/8"), 5),
                CidrLimit::new(cidr("10.1.0.0/16"), 6),
                CidrLimit::new(cidr("10.0.0.0/8"), 7),
            ],
            ..Limits::default()
        }
        .compile()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid config: overrides[2].network: 10.0.0.0/8 is already listed at overrides[0]"
        );
        let err = Limits {
            exempt: vec![cidr("::1/128"), cidr("::1/128")],
            ..Limits::default()
        }
        .compile()
        .unwrap_err();
        assert_eq!(err.field(), "exempt[1]");
        let err = Limits {
            trusted_proxies: vec![cidr("192.0.2.1/32"), cidr("192.0.2.1/32")],
            ..Limits::default()
        }
        .compile()
        .unwrap_err();
        assert_eq!(err.field(), "trusted_proxies[1]");
    }

    #[test]
    fn an_override_narrower_than_a_client_is_refused() {
        let err = Limits {
            overrides: vec![CidrLimit::new(cidr("2001:db8::1/128"), 5)],
            ..Limits::default()
        }
        .compile()
        .unwrap_err();
        assert_eq!(err.field(), "overrides[0].network");
        assert_eq!(
            err.reason(),
            "2001:db8::1/128 is narrower than a client: ipv6_prefix is /64, so clients are \
             counted per /64 and a limit must cover whole clients"
        );
        Limits {
            overrides: vec![CidrLimit::new(cidr("2001:db8::/64"), 5)],
            ..Limits::default()
        }
        .compile()
        .unwrap();
    }

    #[test]
    fn exempt_addresses_and_the_clients_they_overlap() {
        let compiled = Limits {
            exempt: vec![cidr("2001:db8::/126")],
            ..Limits::default()
        }
        .compile()
        .unwrap();
        let (exempt, other) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::9".parse().unwrap(),
        );
        assert!(compiled.is_exempt(exempt));
        assert!(!compiled.is_exempt(other));
        assert_eq!(compiled.key(other).to_string(), "2001:db8::/64");
        assert_eq!(
            compiled.exempt_overlap(compiled.key(other)),
            Overlap::Partly
        );
        let elsewhere = compiled.key("2001:db8:1::9".parse().unwrap());
        assert_eq!(compiled.exempt_overlap(elsewhere), Overlap::None);
    }

    #[test]
    fn longest_override_prefix_wins() {
        let compiled = Limits {
            max_conns_per_client: 3,
            overrides: vec![
                CidrLimit::new(cidr("10.0.0.0/8"), 50),
                CidrLimit::new(cidr("10.1.0.0/16"), 7),
            ],
            ..Limits::default()
        }
        .compile()
        .unwrap();
        assert_eq!(compiled.conn_limit_for("10.1.2.3".parse().unwrap()), 7);
        assert_eq!(compiled.conn_limit_for("10.2.2.3".parse().unwrap()), 50);
        assert_eq!(compiled.conn_limit_for("192.0.2.1".parse().unwrap()), 3);
    }

    #[test]
    fn path_rule_methods_are_http_tokens() {
        let rate = RateLimit::new(1, std::time::Duration::from_secs(1));
        let err = Limits {
            path_rules: vec![PathRule::exact("/a", rate).method("GE T")],
            ..Limits::default()
        }
        .compile()
        .unwrap_err();
        assert_eq!(err.field(), "path_rules[0].method");
        assert_eq!(err.reason(), "\"GE T\" is not an HTTP method");
    }
}
