//! [`Config`]: the one config — the limits, and each integration's settings — and installing
//! it in a [`Limiter`].
//!
//! The limit fields belong to the core, which checks and prepares them (`Limits`); each
//! integration keeps its settings in a type of its own, nested here ([`ListenerConfig`],
//! [`ClientIpConfig`]), and reads them back from the limiter by type (`Settings`), so that the
//! core names no integration and the listener and client-address code never name this module.
//!
//! With the `serde` feature, `Config` and every type in it implement `Deserialize` and
//! `Serialize` for one schema, the config file's: what `serde_json::to_string(&config)` or
//! `toml::to_string(&config)` writes (durations as `"1m 30s"`, networks as `"10.0.0.0/8"`,
//! names as `"evict_stalest"`) reads back as `config`. `src/guide/config_fields.md` lists every
//! field with its default; `tests/schema.rs` checks it, and `examples/config.toml`, against
//! the schema.

use std::sync::Arc;

pub use crate::cidr::CidrError;
pub use crate::error::{ConfigError, Location};
pub use crate::fair_share::FairShare;
use crate::keys::KeyConfig;
pub use crate::limits::{CidrLimit, WhenFull};

use crate::ban::BanPolicy;
use crate::cidr::Cidr;
use crate::client_ip::{ClientIpConfig, ClientIpHeader};
use crate::clock::{Clock, TokioClock};
use crate::limiter::{Above, Composition, Installed, Limiter, Settings};
use crate::limits::{Limits, Lookups};
use crate::listener::{ListenerConfig, ListenerSettings, ProxyProtocol};
use crate::rate::PathRule;
use crate::rate::RateLimit;

/// Everything a [`Limiter`] enforces: the limits, and the settings of the listener and the
/// client-address headers.
///
/// Every limit uses `0` for "unlimited", as go-connlimit and Nomad do. Build one from the
/// defaults and change what you need:
///
/// ```
/// use std::time::Duration;
/// use tower_connlimit::{config::CidrLimit, Config, listener::ListenerConfig};
///
/// let config = Config {
///     max_conns_per_client: 10,
///     max_conns_total: 10_000,
///     exempt: vec!["10.0.0.0/8".parse().unwrap()],
///     overrides: vec![CidrLimit::new("203.0.113.0/24".parse().unwrap(), 200)],
///     listener: ListenerConfig {
///         handshake_timeout: Duration::from_secs(10),
///         ..ListenerConfig::default()
///     },
///     ..Config::default()
/// };
/// config.validate().unwrap();
/// ```
///
/// A `Config` is checked when it is installed ([`Limiter::try_new`], [`Limiter::set_config`]);
/// an invalid one is refused with a [`ConfigError`] naming the field and the reason, and the
/// previous config stays in force. With the `serde` feature it also loads from TOML or JSON,
/// field by field as here, sections as tables (`[listener]`): see `Config::from_toml_str`; and
/// it serializes to the same form, so that a config written out reads back as itself.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
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
    /// Concurrent in-flight requests across all clients, enforced by the request-level layer.
    /// Default 0 (unlimited). Exempt clients are counted but never refused; a keyed request
    /// counts once, under its key.
    pub max_requests_total: usize,
    /// Fair sharing of `max_conns_total` and `max_requests_total`: a client may use what is
    /// idle, up to a ceiling, and is held to its fair share under contention. Off by default;
    /// see [`FairShare`].
    pub fair_share: FairShare,
    /// How many leading bits of an IPv4 address identify a client. Default 32 (one address);
    /// at most 32.
    pub ipv4_prefix: u8,
    /// How many leading bits of an IPv6 address identify a client. Default 64 (one subscriber's
    /// subnet); at most 128. Use 128 to key by exact address, as go-connlimit does.
    pub ipv6_prefix: u8,
    /// Networks that are never limited. Their connections and requests are still counted, so
    /// [`Limiter::stats`] stays truthful, under each exempt client's exact address (not its
    /// prefix), so an exempt host never uses up the allowance of the non-exempt neighbours in
    /// its /64.
    pub exempt: Vec<Cidr>,
    /// Per-network replacements of `max_conns_per_client` (a NAT gateway may deserve more, a
    /// noisy network less). When several networks contain a client, the longest prefix wins. A
    /// network must cover whole clients: one narrower than `ipv4_prefix` / `ipv6_prefix` (a
    /// `/128` override under the default `/64`) is refused, since every address of a client
    /// shares one count and must share one limit.
    pub overrides: Vec<CidrLimit>,
    /// How fast one client may open connections, checked at every connection admission point
    /// before the concurrency limits. Default `None` (no limit). A typical connection gate
    /// counts connects with [`Strategy::Cooldown`](crate::rate::Strategy::Cooldown):
    /// `RateLimit::new(1, Duration::from_millis(100)).strategy(Strategy::Cooldown)`, which is
    /// also the default strategy of this field in config files.
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "crate::rate::file::cooldown_by_default")
    )]
    pub connect_rate: Option<RateLimit>,
    /// How fast one client may send requests, checked by the request-level layer before the
    /// in-flight limit. Default `None` (no limit); a sliding window suits it.
    pub request_rate: Option<RateLimit>,
    /// Extra request rates for some routes, checked by the request-level layer after
    /// `request_rate`. Every rule whose path and method match a request applies, each with its own
    /// per-client count.
    pub path_rules: Vec<PathRule>,
    /// Temporary bans for clients that keep breaking rate rules. Default `None` (no automatic
    /// bans; [`Limiter::ban`] still works).
    pub ban: Option<BanPolicy>,
    /// The most clients the limiter remembers at once. Default 1,000,000; 0 means unlimited.
    /// Clients with open connections or in-flight requests are always remembered; beyond them,
    /// rate and ban state is kept for clients that have left, and this bounds that memory. See
    /// [`WhenFull`] for what happens when a new client arrives at the bound.
    pub max_tracked_clients: usize,
    /// What to do when a new client arrives and `max_tracked_clients` are tracked.
    pub when_full: WhenFull,
    /// The most client keys one wider network (see `network_ipv4_prefix` and
    /// `network_ipv6_prefix`) may hold in the table. Default 256; 0 means no bound. Past it, the
    /// network's further addresses are counted together under the network's own key: one
    /// per-client allowance, one rate record and one ban for all of them. So an attacker with an
    /// IPv6 /48 (65,536 /64 clients) holds at most 257 entries of the table, and rotating its
    /// addresses gains it at most 257 rate allowances, not 65,536; its neighbours beyond the
    /// first 256 keys share one allowance with it. Exempt clients are not counted.
    pub max_keys_per_network: usize,
    /// The network an IPv4 client key is counted in for `max_keys_per_network`. Default 24: as
    /// a /24 holds 256 addresses, the default bound leaves IPv4 alone. At most 32.
    pub network_ipv4_prefix: u8,
    /// The network an IPv6 client key is counted in for `max_keys_per_network`. Default 48, a
    /// site's usual assignment. At most 128.
    pub network_ipv6_prefix: u8,
    /// The limits of requests keyed by an API key, a user or a tenant: tiers, and what one
    /// address may do whatever its keys. See [`keys`](crate::keys). Default: no tiers, each key
    /// held to `max_requests_per_client` and `request_rate`, no limit per address.
    pub keys: KeyConfig,
    /// Proxies whose word on the real client is believed: the peers allowed to send a PROXY
    /// header (see [`ListenerConfig::proxy_protocol`]) or a client address header (see
    /// [`ClientIpConfig::header`]). Default empty.
    pub trusted_proxies: Vec<Cidr>,
    /// The listener's settings: connection deadlines and the PROXY protocol.
    pub listener: ListenerConfig,
    /// Where the request layer finds the client behind a trusted HTTP proxy.
    pub client_ip: ClientIpConfig,
}

/// Calls `$then!` with the names of the limit fields: the fields `Config` shares with the
/// core's `Limits`, of the same types and meanings. The compiler checks this list against both
/// structs: a field missing from it is missing from a struct expression it builds.
macro_rules! with_limit_fields {
    ($then:ident) => {
        $then!(
            max_conns_per_client,
            max_conns_total,
            max_requests_per_client,
            max_requests_total,
            fair_share,
            ipv4_prefix,
            ipv6_prefix,
            exempt,
            overrides,
            trusted_proxies,
            connect_rate,
            request_rate,
            path_rules,
            ban,
            max_tracked_clients,
            when_full,
            max_keys_per_network,
            network_ipv4_prefix,
            network_ipv6_prefix,
            keys
        )
    };
}

impl Default for Config {
    /// The core's default limits (see each field), and each integration's default settings.
    fn default() -> Self {
        let limits = Limits::default();
        macro_rules! config_of_limits {
            ($($field:ident),*) => {
                Config {
                    $($field: limits.$field,)*
                    listener: ListenerConfig::default(),
                    client_ip: ClientIpConfig::default(),
                }
            };
        }
        with_limit_fields!(config_of_limits)
    }
}

/// What this module keeps in a limiter beside the limits: the config as it was given, and the
/// settings the integrations read back. The core holds it without looking inside: its fields
/// are this module's.
pub(crate) struct Prepared {
    config: Arc<Config>,
    listener: ListenerSettings,
    client_ip: ClientIpConfig,
}

impl Prepared {
    /// `config` (already checked), with what the integrations read at each decision.
    fn new(config: Config) -> Self {
        Prepared {
            listener: config.listener.prepare(),
            client_ip: config.client_ip,
            config: Arc::new(config),
        }
    }
}

impl Default for Prepared {
    /// The default config, prepared.
    fn default() -> Self {
        Prepared::new(Config::default())
    }
}

impl Composition for Above {
    type Whole = Prepared;
}

impl Config {
    /// Checks that every value is possible, and that the settings agree with each other.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first offending field: a prefix longer than its address
    /// family, an override narrower than a client, a network listed twice (a second entry would
    /// silently shadow the first), a rate rule that cannot be kept, or a setting that needs
    /// another (a PROXY protocol or a client address header with no trusted proxy).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.limits().validate()?;
        self.check_sections()
    }

    /// The limit fields, as the core reads them (not checked yet).
    fn limits(&self) -> Limits {
        let config = self.clone();
        macro_rules! limits_of_config {
            ($($field:ident),*) => {
                Limits {
                    $($field: config.$field,)*
                    lookups: Lookups::default(),
                }
            };
        }
        with_limit_fields!(limits_of_config)
    }

    /// Each integration's settings, then what they need of each other and of the limits.
    fn check_sections(&self) -> Result<(), ConfigError> {
        self.listener
            .validate()
            .map_err(|err| err.in_section("listener"))?;
        self.client_ip
            .validate()
            .map_err(|err| err.in_section("client_ip"))?;
        if self.listener.proxy_protocol != ProxyProtocol::Off && self.trusted_proxies.is_empty() {
            return Err(ConfigError::new(
                "trusted_proxies",
                "is empty, so with listener.proxy_protocol on every connection would be refused",
            ));
        }
        if self.client_ip.header != ClientIpHeader::None {
            if self.listener.proxy_protocol != ProxyProtocol::Off {
                return Err(ConfigError::new(
                    "client_ip.header",
                    "cannot be combined with listener.proxy_protocol: the PROXY header already \
                     names the client, and a client whose own address lies in trusted_proxies \
                     could name itself in the header",
                ));
            }
            if self.trusted_proxies.is_empty() {
                return Err(ConfigError::new(
                    "trusted_proxies",
                    format!(
                        "is empty, so client_ip.header ({}) would never be read",
                        self.client_ip.header
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The config as a limiter holds it.
    fn install(self) -> Result<Installed, ConfigError> {
        let limits = self.limits().compile()?;
        self.check_sections()?;
        Ok(Installed {
            limits,
            whole: Arc::new(Prepared::new(self)),
        })
    }
}

impl Limiter {
    /// A limiter enforcing `config`.
    ///
    /// # Panics
    ///
    /// If `config` is invalid (see [`Config::validate`]); use [`Limiter::try_new`] to handle that
    /// as an error instead.
    pub fn new(config: Config) -> Self {
        match Self::try_new(config) {
            Ok(limiter) => limiter,
            Err(err) => panic!("{err}"),
        }
    }

    /// A limiter enforcing `config`, or the reason `config` is invalid.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the offending field.
    pub fn try_new(config: Config) -> Result<Self, ConfigError> {
        Self::try_with_clock(config, TokioClock::new())
    }

    /// A limiter enforcing `config` on the time of `clock`, or why `config` is invalid.
    ///
    /// Rates are measured on `clock`. The default, [`TokioClock`], follows tokio's paused time;
    /// a [`FakeClock`](crate::clock::FakeClock) makes time move only when a test says so.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the offending field.
    pub fn try_with_clock(config: Config, clock: impl Clock) -> Result<Self, ConfigError> {
        Ok(Limiter::with_installed(config.install()?, clock))
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.installed().whole.config)
    }

    /// Replaces the config atomically; the next decision uses it.
    ///
    /// Lowering a limit never closes open connections: it only refuses new ones until the client
    /// is back under the limit (go-connlimit's behaviour). A changed prefix applies to new
    /// connections; open ones are released against the key they were counted under. The
    /// listener's deadlines apply to connections accepted from then on.
    ///
    /// # Errors
    ///
    /// An invalid config is refused with a [`ConfigError`], and the previous config stays.
    pub fn set_config(&self, config: Config) -> Result<(), ConfigError> {
        self.install(config.install()?);
        Ok(())
    }
}

impl Settings<ListenerSettings> for Limiter {
    fn with_settings<R>(&self, f: impl FnOnce(&ListenerSettings, &Limits) -> R) -> R {
        let installed = self.installed();
        f(&installed.whole.listener, &installed.limits)
    }
}

impl Settings<ClientIpConfig> for Limiter {
    fn with_settings<R>(&self, f: impl FnOnce(&ClientIpConfig, &Limits) -> R) -> R {
        let installed = self.installed();
        f(&installed.whole.client_ip, &installed.limits)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.max_conns_per_client, 100);
        assert_eq!(c.max_conns_total, 0);
        assert_eq!(c.max_requests_per_client, 0);
        assert_eq!((c.ipv4_prefix, c.ipv6_prefix), (32, 64));
        assert_eq!(c.listener.handshake_timeout, Duration::ZERO);
        assert_eq!(c.listener.idle_timeout, Duration::ZERO);
    }

    #[test]
    fn the_installed_config_is_the_one_given_and_sections_are_read_back() {
        let config = Config {
            max_conns_per_client: 7,
            trusted_proxies: vec!["192.0.2.10/32".parse().unwrap()],
            client_ip: ClientIpConfig {
                header: ClientIpHeader::XRealIp,
                trusted_hops: 1,
                ..ClientIpConfig::default()
            },
            ..Config::default()
        };
        let limiter = Limiter::new(config.clone());
        assert_eq!(*limiter.config(), config);
        let header = limiter.with_settings(|client_ip: &ClientIpConfig, _| client_ip.header);
        assert_eq!(header, ClientIpHeader::XRealIp);
        let listener = limiter.with_settings(|listener: &ListenerSettings, _| *listener);
        assert_eq!(listener, ListenerConfig::default().prepare());
    }

    #[test]
    fn sections_are_named_in_errors_and_checked_together() {
        let err = Config {
            listener: ListenerConfig {
                proxy_protocol: ProxyProtocol::Required,
                ..ListenerConfig::default()
            },
            ..Config::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.field(), "trusted_proxies");
        let err = Config {
            trusted_proxies: vec!["192.0.2.10/32".parse().unwrap()],
            client_ip: ClientIpConfig {
                header: ClientIpHeader::Forwarded,
                trusted_hops: 0,
                ..ClientIpConfig::default()
            },
            ..Config::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.field(), "client_ip.trusted_hops");
    }
}
