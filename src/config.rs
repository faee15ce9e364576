//! [`Config`]: the limits, and their validation.

use std::fmt;
use std::net::IpAddr;

use std::time::Duration;

use crate::listener::DeadlineSettings;
use crate::{Cidr, ClientIpHeader, ClientKey, MinReceiveRate, ProxyProtocol, RateLimit, Strategy};

/// The limits a [`Limiter`](crate::Limiter) enforces.
///
/// Every limit uses `0` for "unlimited", as go-connlimit and Nomad do. Build one from the
/// defaults and change what you need:
///
/// ```
/// use tower_connlimit::{CidrLimit, Config};
///
/// let config = Config {
///     max_conns_per_client: 10,
///     max_conns_total: 10_000,
///     exempt: vec!["10.0.0.0/8".parse().unwrap()],
///     overrides: vec![CidrLimit::new("203.0.113.0/24".parse().unwrap(), 200)],
///     ..Config::default()
/// };
/// config.validate().unwrap();
/// ```
///
/// A `Config` is checked when it is installed ([`Limiter::try_new`](crate::Limiter::try_new),
/// [`Limiter::set_config`](crate::Limiter::set_config)); an invalid one is refused with a
/// [`ConfigError`] naming the field and the reason, and the previous config stays in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Concurrent connections one client may hold. Default 100 (go-connlimit's and Nomad's
    /// default); 0 means unlimited.
    pub max_conns_per_client: usize,
    /// Concurrent connections across all clients. Default 0 (unlimited). Exempt clients are
    /// counted but never refused.
    pub max_conns_total: usize,
    /// Concurrent in-flight requests one client may have, enforced by the request-level layer.
    /// Default 0 (unlimited). A request counts until its response body ends.
    pub max_requests_per_client: usize,
    /// How many leading bits of an IPv4 address identify a client. Default 32 (one address);
    /// at most 32.
    pub ipv4_prefix: u8,
    /// How many leading bits of an IPv6 address identify a client. Default 64 (one subscriber's
    /// subnet); at most 128. Use 128 to key by exact address, as go-connlimit does.
    pub ipv6_prefix: u8,
    /// Networks that are never limited. Their connections and requests are still counted, so
    /// [`Limiter::stats`](crate::Limiter::stats) stays truthful, under each exempt client's exact
    /// address (not its prefix), so an exempt host never uses up the allowance of the
    /// non-exempt neighbours in its /64.
    pub exempt: Vec<Cidr>,
    /// How fast one client may open connections, checked at every connection admission point
    /// before the concurrency limits. Default `None` (no limit). A typical connection gate counts connects
    /// with [`Strategy::Cooldown`](crate::Strategy::Cooldown):
    /// `RateLimit::new(1, Duration::from_millis(100)).strategy(Strategy::Cooldown)`.
    pub connect_rate: Option<RateLimit>,
    /// How fast one client may send requests, checked by the request-level layer before the
    /// in-flight limit. Default `None` (no limit); a sliding window suits it.
    pub request_rate: Option<RateLimit>,
    /// Extra request rates for some routes, checked by the request-level layer after
    /// `request_rate`. Every rule whose path and method match a request applies, each with its own
    /// per-client count.
    pub path_rules: Vec<PathRule>,
    /// Temporary bans for clients that keep breaking rate rules. Default `None` (no automatic
    /// bans; [`Limiter::ban`](crate::Limiter::ban) still works).
    pub ban: Option<BanPolicy>,
    /// The most clients the limiter remembers at once. Default 1,000,000; 0 means unlimited.
    /// Clients with open connections or in-flight requests are always remembered; beyond them,
    /// rate and ban state is kept for clients that have left, and this bounds that memory. See
    /// [`WhenFull`] for what happens when a new client arrives at the bound.
    pub max_tracked_clients: usize,
    /// What to do when a new client arrives and `max_tracked_clients` are tracked.
    pub when_full: WhenFull,
    /// Per-network replacements of `max_conns_per_client` (a NAT gateway may deserve more, a
    /// noisy network less). When several networks contain a client, the longest prefix wins. A
    /// network must cover whole clients: one narrower than `ipv4_prefix` / `ipv6_prefix` (a
    /// `/128` override under the default `/64`) is refused, since every address of a client
    /// shares one count and must share one limit.
    pub overrides: Vec<CidrLimit>,
    /// How long a connection accepted by a [`ConnLimitListener`](crate::ConnLimitListener) may
    /// wait before its client sends a first byte (a TLS ClientHello, an HTTP request line),
    /// like Nomad's `rpc_handshake_timeout`. Default zero: off. Leave it off for protocols
    /// where the server speaks first (SMTP, MySQL).
    pub handshake_timeout: Duration,
    /// How long a listener's connection may go without a byte moving either way before it is
    /// closed. Default zero: off. Set it longer than your slowest handler and longest
    /// long-poll, or have the application send keep-alives (HTTP/2 pings, WebSocket pings).
    pub idle_timeout: Duration,
    /// The slowest a listener's client may send while the server waits on it, in the style of
    /// Apache `mod_reqtimeout`'s `MinRate`. Default `None`: off. See [`MinReceiveRate`].
    pub min_receive_rate: Option<MinReceiveRate>,
    /// Proxies whose word on the real client is believed: the peers allowed to send a PROXY
    /// header (see `proxy_protocol`) or a client address header (see `client_ip_header`).
    /// Default empty.
    pub trusted_proxies: Vec<Cidr>,
    /// Whether a [`ConnLimitListener`](crate::ConnLimitListener) expects a PROXY protocol
    /// header (v1 or v2, as HAProxy, AWS NLB and Envoy send) at the start of every connection.
    /// Default [`ProxyProtocol::Off`].
    pub proxy_protocol: ProxyProtocol,
    /// How long a trusted proxy may take to send its PROXY header before the connection is
    /// closed. Default 5 seconds; must be more than zero when `proxy_protocol` is on.
    pub proxy_header_timeout: Duration,
    /// The request header the request-level layer reads the client address from when the
    /// socket peer is one of `trusted_proxies`. Default [`ClientIpHeader::None`]: the client is
    /// the socket peer. See [`ClientIpHeader`] for how the header is read.
    pub client_ip_header: ClientIpHeader,
    /// How many trusted proxies stand in front of the server, each appending one entry to
    /// `client_ip_header`: the client is that many entries from the right. Default 1; between 1
    /// and 64.
    pub trusted_hops: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_conns_per_client: 100,
            max_conns_total: 0,
            max_requests_per_client: 0,
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            connect_rate: None,
            request_rate: None,
            path_rules: Vec::new(),
            ban: None,
            max_tracked_clients: 1_000_000,
            when_full: WhenFull::EvictStalest,
            exempt: Vec::new(),
            overrides: Vec::new(),
            handshake_timeout: Duration::ZERO,
            idle_timeout: Duration::ZERO,
            min_receive_rate: None,
            trusted_proxies: Vec::new(),
            proxy_protocol: ProxyProtocol::Off,
            proxy_header_timeout: Duration::from_secs(5),
            client_ip_header: ClientIpHeader::None,
            trusted_hops: 1,
        }
    }
}

impl Config {
    /// Checks that every value is possible.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first offending field: a prefix longer than its address
    /// family, an override narrower than a client, or a network listed twice in `exempt` or
    /// `overrides` (a second entry for the same network would silently shadow the first).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.ipv4_prefix > 32 {
            return Err(ConfigError::new(
                "ipv4_prefix",
                format!("must be at most 32, got {}", self.ipv4_prefix),
            ));
        }
        if self.ipv6_prefix > 128 {
            return Err(ConfigError::new(
                "ipv6_prefix",
                format!("must be at most 128, got {}", self.ipv6_prefix),
            ));
        }
        if let Some(rule) = &self.connect_rate {
            rule.validate("connect_rate")?;
        }
        if let Some(rule) = &self.request_rate {
            rule.validate("request_rate")?;
        }
        for (i, rule) in self.path_rules.iter().enumerate() {
            rule.validate(i)?;
        }
        if let Some(ban) = &self.ban {
            ban.validate()?;
        }
        if let Some((i, first)) = first_repeat(self.exempt.iter().copied()) {
            return Err(ConfigError::new(
                format!("exempt[{i}]"),
                format!("{} is already listed at exempt[{first}]", self.exempt[i]),
            ));
        }
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
        if let Some((i, first)) = first_repeat(self.overrides.iter().map(|o| o.network)) {
            return Err(ConfigError::new(
                format!("overrides[{i}].network"),
                format!(
                    "{} is already listed at overrides[{first}]",
                    self.overrides[i].network
                ),
            ));
        }
        self.validate_proxies()?;
        if let Some(rate) = &self.min_receive_rate {
            rate.validate()?;
        }
        Ok(())
    }

    /// Checks the fields about proxies: each feature that trusts proxies needs some to trust.
    fn validate_proxies(&self) -> Result<(), ConfigError> {
        if let Some((i, first)) = first_repeat(self.trusted_proxies.iter().copied()) {
            return Err(ConfigError::new(
                format!("trusted_proxies[{i}]"),
                format!(
                    "{} is already listed at trusted_proxies[{first}]",
                    self.trusted_proxies[i]
                ),
            ));
        }
        if self.proxy_protocol != ProxyProtocol::Off {
            if self.trusted_proxies.is_empty() {
                return Err(ConfigError::new(
                    "trusted_proxies",
                    "is empty, so with proxy_protocol on every connection would be refused",
                ));
            }
            if self.proxy_header_timeout.is_zero() {
                return Err(ConfigError::new(
                    "proxy_header_timeout",
                    "must be longer than zero when proxy_protocol is on",
                ));
            }
        }
        if self.client_ip_header != ClientIpHeader::None {
            if self.proxy_protocol != ProxyProtocol::Off {
                return Err(ConfigError::new(
                    "client_ip_header",
                    "cannot be combined with proxy_protocol: the PROXY header already names the \
                     client, and a client whose own address lies in trusted_proxies could name \
                     itself in the header",
                ));
            }
            if self.trusted_proxies.is_empty() {
                return Err(ConfigError::new(
                    "trusted_proxies",
                    format!(
                        "is empty, so client_ip_header ({}) would never be read",
                        self.client_ip_header
                    ),
                ));
            }
            if !(1..=MAX_TRUSTED_HOPS).contains(&self.trusted_hops) {
                return Err(ConfigError::new(
                    "trusted_hops",
                    format!(
                        "must be between 1 and {}, got {}",
                        MAX_TRUSTED_HOPS, self.trusted_hops
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The client prefix length for `ip`'s family.
    fn client_prefix_for(&self, ip: IpAddr) -> u8 {
        match ip {
            IpAddr::V4(_) => self.ipv4_prefix,
            IpAddr::V6(_) => self.ipv6_prefix,
        }
    }
}

/// The most proxies `trusted_hops` may name: the request header reader looks at no more entries
/// than this, so a hostile client cannot make it walk a huge list.
pub(crate) const MAX_TRUSTED_HOPS: usize = 64;

/// The index of the first item equal to an earlier one, and that earlier one's index.
fn first_repeat(items: impl Iterator<Item = Cidr> + Clone) -> Option<(usize, usize)> {
    items.clone().enumerate().find_map(|(i, item)| {
        items
            .clone()
            .take(i)
            .position(|earlier| earlier == item)
            .map(|first| (i, first))
    })
}

/// An extra rate for requests to some paths: `/login`, `/api/`.
///
/// ```
/// use std::time::Duration;
/// use http::Method;
/// use tower_connlimit::{PathRule, RateLimit};
///
/// // At most 5 login attempts a minute per client.
/// let rule = PathRule::exact("/login", RateLimit::new(5, Duration::from_secs(60))).method(Method::POST);
/// assert!(rule.matches(&Method::POST, "/login"));
/// assert!(!rule.matches(&Method::GET, "/login"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathRule {
    /// The path, or path prefix, the rule applies to.
    pub path: String,
    /// Whether `path` is matched exactly or as a prefix.
    pub matching: PathMatch,
    /// Only requests with this method, or any method when `None`.
    pub method: Option<http::Method>,
    /// The rate each client may send matching requests at.
    pub rate: RateLimit,
}

/// How a [`PathRule`] matches a request path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PathMatch {
    /// The request path equals the rule's path.
    #[default]
    Exact,
    /// The request path is the rule's path or lies below it, segment-wise: `/api` matches `/api`,
    /// `/api/` and `/api/users`, but not `/apix`.
    Prefix,
}

impl PathRule {
    /// A rule for exactly `path`.
    pub fn exact(path: impl Into<String>, rate: RateLimit) -> Self {
        PathRule {
            path: path.into(),
            matching: PathMatch::Exact,
            method: None,
            rate,
        }
    }

    /// A rule for `path` and every path below it.
    pub fn prefix(path: impl Into<String>, rate: RateLimit) -> Self {
        PathRule {
            matching: PathMatch::Prefix,
            ..Self::exact(path, rate)
        }
    }

    /// The same rule, for `method` only.
    pub fn method(mut self, method: http::Method) -> Self {
        self.method = Some(method);
        self
    }

    /// Whether a request with `method` to `path` falls under this rule.
    pub fn matches(&self, method: &http::Method, path: &str) -> bool {
        if self.method.as_ref().is_some_and(|m| m != method) {
            return false;
        }
        match self.matching {
            PathMatch::Exact => path == self.path,
            PathMatch::Prefix => match path.strip_prefix(self.path.as_str()) {
                Some(rest) => rest.is_empty() || self.path.ends_with('/') || rest.starts_with('/'),
                None => false,
            },
        }
    }

    fn validate(&self, i: usize) -> Result<(), ConfigError> {
        if !self.path.starts_with('/') {
            return Err(ConfigError::new(
                format!("path_rules[{i}].path"),
                format!("{:?} must start with '/'", self.path),
            ));
        }
        self.rate.validate(&format!("path_rules[{i}].rate"))
    }
}

/// When clients are banned, and for how long.
///
/// Every request or connection a rate rule refuses is a *violation*. A client with more than
/// `max_violations` violations within `within` is banned for `ban_for`: refused at every
/// admission point (the listener closes it at accept) until the ban expires. With `escalate`,
/// each further ban of the same client lasts twice the one before, up to `max_ban_for` (like
/// fail2ban's `bantime.increment`); the client's record of bans is kept while it is tracked.
/// `jitter` adds a random part to every ban, so that banned clients do not all come back at
/// the same instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BanPolicy {
    /// Violations tolerated within `within`; one more bans the client. At least 1.
    pub max_violations: u32,
    /// The window violations are counted over.
    pub within: Duration,
    /// How long a first ban lasts.
    pub ban_for: Duration,
    /// Whether repeat bans double in length.
    pub escalate: bool,
    /// The longest ban escalation can reach.
    pub max_ban_for: Duration,
    /// Up to this much is added to each ban, at random.
    pub jitter: Duration,
    /// Shadow mode: count (as dry-run) and log the bans that would happen, but ban no one.
    pub dry_run: bool,
}

impl BanPolicy {
    /// Ban for `ban_for` a client with more than `max_violations` violations within `within`;
    /// no escalation, no jitter.
    pub fn new(max_violations: u32, within: Duration, ban_for: Duration) -> Self {
        BanPolicy {
            max_violations,
            within,
            ban_for,
            escalate: false,
            max_ban_for: ban_for,
            jitter: Duration::ZERO,
            dry_run: false,
        }
    }

    /// Repeat bans double, up to `max_ban_for`.
    pub fn escalate(mut self, max_ban_for: Duration) -> Self {
        self.escalate = true;
        self.max_ban_for = max_ban_for;
        self
    }

    /// Adds up to `jitter` to each ban, at random.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Shadow mode: bans are counted and logged, not enforced.
    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }

    /// The violation count as a rate rule: its refusal is the ban trigger.
    pub(crate) fn violations(&self) -> RateLimit {
        RateLimit::new(self.max_violations, self.within).strategy(Strategy::FixedWindow)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_violations == 0 {
            return Err(ConfigError::new(
                "ban.max_violations",
                "must be at least 1 (leave `ban` out for no automatic bans)",
            ));
        }
        if self.within.is_zero() {
            return Err(ConfigError::new("ban.within", "must be longer than zero"));
        }
        if let Err(err) = self.violations().validate("ban") {
            return Err(ConfigError::new("ban.within", err.reason()));
        }
        if self.ban_for.is_zero() {
            return Err(ConfigError::new("ban.ban_for", "must be longer than zero"));
        }
        if self.escalate && self.max_ban_for < self.ban_for {
            return Err(ConfigError::new(
                "ban.max_ban_for",
                format!(
                    "{:?} is shorter than ban_for ({:?})",
                    self.max_ban_for, self.ban_for
                ),
            ));
        }
        Ok(())
    }
}

/// What happens when a new client arrives and [`Config::max_tracked_clients`] are tracked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WhenFull {
    /// Forget clients that have nothing open to make room: of up to 256 such clients sampled,
    /// the quarter whose records expire first (expired ones before all). The default: honest newcomers keep getting in, and an
    /// attacker rotating addresses only pushes out its own stale records. Evictions are counted
    /// in [`Stats::evictions`](crate::Stats::evictions).
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// A refused [`Config`]: which field, and why.
///
/// ```
/// use tower_connlimit::{Config, Limiter};
///
/// let err = Limiter::try_new(Config { ipv4_prefix: 33, ..Config::default() }).unwrap_err();
/// assert_eq!(err.field(), "ipv4_prefix");
/// assert_eq!(err.to_string(), "invalid config: ipv4_prefix: must be at most 32, got 33");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    field: String,
    reason: String,
}

impl ConfigError {
    /// An error about `field` (a path such as `overrides[2].network`).
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The offending field, as a path into the config (`ipv6_prefix`, `overrides[1].network`).
    pub fn field(&self) -> &str {
        &self.field
    }

    /// Why the value was refused.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid config: {}: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// A validated [`Config`] prepared for fast decisions: network lists sorted for longest-prefix
/// lookups. Built once per [`Limiter::set_config`](crate::Limiter::set_config), read on every
/// admission.
#[derive(Debug)]
pub(crate) struct CompiledConfig {
    pub(crate) config: std::sync::Arc<Config>,
    /// Distinct for every compiled config, so per-client path states laid out for an earlier
    /// list of path rules are started afresh.
    pub(crate) generation: u64,
    /// Overrides, longest prefix first, so the first match is the most specific.
    overrides: Box<[CidrLimit]>,
    /// The deadlines the listener puts on each connection, or `None` when all are off.
    pub(crate) deadlines: Option<DeadlineSettings>,
}

impl CompiledConfig {
    pub(crate) fn compile(config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut overrides: Box<[CidrLimit]> = config.overrides.clone().into_boxed_slice();
        overrides.sort_by_key(|o| std::cmp::Reverse(o.network.prefix_len()));
        static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Ok(CompiledConfig {
            generation: GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            deadlines: DeadlineSettings::from_config(&config),
            config: std::sync::Arc::new(config),
            overrides,
        })
    }

    /// Whether any rule depends on time, so decisions must read the clock.
    #[inline]
    pub(crate) fn has_rates(&self) -> bool {
        let c = &*self.config;
        c.connect_rate.is_some() || c.request_rate.is_some() || !c.path_rules.is_empty()
    }

    /// The key `ip` is counted under, and whether it is exempt.
    ///
    /// An exempt client is keyed by its exact address, not by the configured prefix: its
    /// connections are counted but must not use up the allowance of the non-exempt neighbours
    /// sharing its /64 (or IPv4 prefix).
    #[inline]
    pub(crate) fn client(&self, ip: IpAddr) -> (ClientKey, bool) {
        let exempt =
            !self.config.exempt.is_empty() && self.config.exempt.iter().any(|c| c.contains(ip));
        let key = if exempt {
            ClientKey::new(ip, 32, 128)
        } else {
            ClientKey::new(ip, self.config.ipv4_prefix, self.config.ipv6_prefix)
        };
        (key, exempt)
    }

    /// Whether `ip` is one of the trusted proxies.
    #[inline]
    pub(crate) fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.config.trusted_proxies.iter().any(|c| c.contains(ip))
    }

    /// The per-client connection limit for `ip`: the longest matching override, else the default.
    #[inline]
    pub(crate) fn conn_limit_for(&self, ip: IpAddr) -> usize {
        self.overrides
            .iter()
            .find(|o| o.network.contains(ip))
            .map_or(self.config.max_conns_per_client, |o| o.max_conns_per_client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.max_conns_per_client, 100);
        assert_eq!(c.max_conns_total, 0);
        assert_eq!(c.max_requests_per_client, 0);
        assert_eq!((c.ipv4_prefix, c.ipv6_prefix), (32, 64));
    }

    #[test]
    fn prefixes_past_the_family_are_refused() {
        let err = Config {
            ipv6_prefix: 129,
            ..Config::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.field(), "ipv6_prefix");
        assert_eq!(err.reason(), "must be at most 128, got 129");
    }

    #[test]
    fn duplicate_networks_are_refused_with_their_index() {
        let err = Config {
            overrides: vec![
                CidrLimit::new(cidr("10.0.0.0/8"), 5),
                CidrLimit::new(cidr("10.1.0.0/16"), 6),
                CidrLimit::new(cidr("10.0.0.0/8"), 7),
            ],
            ..Config::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid config: overrides[2].network: 10.0.0.0/8 is already listed at overrides[0]"
        );
        let err = Config {
            exempt: vec![cidr("::1/128"), cidr("::1/128")],
            ..Config::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.field(), "exempt[1]");
    }

    #[test]
    fn an_override_narrower_than_a_client_is_refused() {
        let err = Config {
            overrides: vec![CidrLimit::new(cidr("2001:db8::1/128"), 5)],
            ..Config::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.field(), "overrides[0].network");
        assert_eq!(
            err.reason(),
            "2001:db8::1/128 is narrower than a client: ipv6_prefix is /64, so clients are \
             counted per /64 and a limit must cover whole clients"
        );
        Config {
            overrides: vec![CidrLimit::new(cidr("2001:db8::/64"), 5)],
            ..Config::default()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn exempt_clients_are_keyed_by_exact_address() {
        let compiled = CompiledConfig::compile(Config {
            exempt: vec![cidr("2001:db8::/126")],
            ..Config::default()
        })
        .unwrap();
        let (key, exempt) = compiled.client("2001:db8::1".parse().unwrap());
        assert!(exempt);
        assert_eq!(key.to_string(), "2001:db8::1");
        let (key, exempt) = compiled.client("2001:db8::9".parse().unwrap());
        assert!(!exempt);
        assert_eq!(key.to_string(), "2001:db8::/64");
    }

    #[test]
    fn longest_override_prefix_wins() {
        let compiled = CompiledConfig::compile(Config {
            max_conns_per_client: 3,
            overrides: vec![
                CidrLimit::new(cidr("10.0.0.0/8"), 50),
                CidrLimit::new(cidr("10.1.0.0/16"), 7),
            ],
            ..Config::default()
        })
        .unwrap();
        assert_eq!(compiled.conn_limit_for("10.1.2.3".parse().unwrap()), 7);
        assert_eq!(compiled.conn_limit_for("10.2.2.3".parse().unwrap()), 50);
        assert_eq!(compiled.conn_limit_for("192.0.2.1".parse().unwrap()), 3);
    }
}
