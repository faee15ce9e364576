//! Loading a [`Config`] from TOML or JSON (feature `serde`).
//!
//! The file names every field of [`Config`] in snake_case; any field left out keeps its
//! default, and an unknown field is an error (a typo must not silently mean "default").
//! Durations are human-readable: `"100ms"`, `"30s"`, `"10m"`, `"24h"`. `examples/config.toml`
//! documents every field.
//!
//! Rate rules default their strategy as a typical connection gate does: `connect_rate` counts with
//! `cooldown`, `request_rate` and path rules with `sliding_window`.
//!
//! Every error names the field and the reason — `path_rules[0].rate.period: invalid duration`,
//! `ipv4_prefix: must be at most 32, got 40` — and never leaves a half-applied config.

use std::time::Duration;

use serde::Deserialize;

use crate::{
    BanPolicy, Cidr, CidrLimit, ClientIpHeader, Config, ConfigError, MinReceiveRate, PathMatch,
    PathRule, ProxyProtocol, RateLimit, Strategy, WhenFull,
};

impl Config {
    /// Parses and validates a config in TOML.
    ///
    /// ```
    /// use tower_connlimit::Config;
    ///
    /// let config = Config::from_toml_str(r#"
    ///     max_conns_per_client = 10
    ///     exempt = ["10.0.0.0/8"]
    ///
    ///     [connect_rate]
    ///     events = 5
    ///     period = "1s"
    /// "#).unwrap();
    /// assert_eq!(config.max_conns_per_client, 10);
    ///
    /// let err = Config::from_toml_str("ipv4_prefix = 40").unwrap_err();
    /// assert_eq!(err.to_string(), "invalid config: ipv4_prefix: must be at most 32, got 40");
    /// ```
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field: a syntax error, an unknown field, a value of the wrong
    /// type, or a value [`Config::validate`] refuses.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let deserializer = toml::Deserializer::parse(text)
            .map_err(|err| ConfigError::new("(toml)", err.message().to_owned()))?;
        from_deserializer(deserializer, |err: toml::de::Error| {
            err.message().to_owned()
        })
    }

    /// Parses and validates a config in JSON; see [`Config::from_toml_str`].
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field, as for TOML.
    pub fn from_json_str(text: &str) -> Result<Config, ConfigError> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let config = from_deserializer(&mut deserializer, |err: serde_json::Error| {
            // serde_json appends " at line L column C"; the field path says where.
            let text = err.to_string();
            match text.rfind(" at line ") {
                Some(at) => text[..at].to_owned(),
                None => text,
            }
        })?;
        deserializer
            .end()
            .map_err(|err| ConfigError::new("(json)", err.to_string()))?;
        Ok(config)
    }
}

impl<'de> Deserialize<'de> for Config {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        ConfigFile::deserialize(deserializer).map(Config::from)
    }
}

fn from_deserializer<'de, D, E>(
    deserializer: D,
    describe: impl Fn(E) -> String,
) -> Result<Config, ConfigError>
where
    D: serde::Deserializer<'de, Error = E>,
    E: serde::de::Error,
{
    let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let field = err.path().to_string();
        ConfigError::new(field, describe(err.into_inner()))
    })?;
    config.validate()?;
    Ok(config)
}

/// The file's shape: [`Config`] with rule strategies left open, so each rule gets its own
/// default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ConfigFile {
    max_conns_per_client: usize,
    max_conns_total: usize,
    max_requests_per_client: usize,
    ipv4_prefix: u8,
    ipv6_prefix: u8,
    connect_rate: Option<RateFile>,
    request_rate: Option<RateFile>,
    path_rules: Vec<PathRuleFile>,
    ban: Option<BanFile>,
    max_tracked_clients: usize,
    when_full: WhenFullFile,
    #[serde(deserialize_with = "cidrs")]
    exempt: Vec<Cidr>,
    overrides: Vec<OverrideFile>,
    #[serde(with = "humantime_serde")]
    handshake_timeout: Duration,
    #[serde(with = "humantime_serde")]
    idle_timeout: Duration,
    min_receive_rate: Option<MinRateFile>,
    #[serde(deserialize_with = "cidrs")]
    trusted_proxies: Vec<Cidr>,
    proxy_protocol: ProxyProtocolFile,
    #[serde(with = "humantime_serde")]
    proxy_header_timeout: Duration,
    #[serde(deserialize_with = "client_ip_header")]
    client_ip_header: ClientIpHeader,
    trusted_hops: usize,
}

impl Default for ConfigFile {
    fn default() -> Self {
        let d = Config::default();
        ConfigFile {
            max_conns_per_client: d.max_conns_per_client,
            max_conns_total: d.max_conns_total,
            max_requests_per_client: d.max_requests_per_client,
            ipv4_prefix: d.ipv4_prefix,
            ipv6_prefix: d.ipv6_prefix,
            connect_rate: None,
            request_rate: None,
            path_rules: Vec::new(),
            ban: None,
            max_tracked_clients: d.max_tracked_clients,
            when_full: WhenFullFile::EvictStalest,
            exempt: d.exempt,
            overrides: Vec::new(),
            handshake_timeout: d.handshake_timeout,
            idle_timeout: d.idle_timeout,
            min_receive_rate: None,
            trusted_proxies: d.trusted_proxies,
            proxy_protocol: ProxyProtocolFile::Off,
            proxy_header_timeout: d.proxy_header_timeout,
            client_ip_header: d.client_ip_header,
            trusted_hops: d.trusted_hops,
        }
    }
}

impl From<ConfigFile> for Config {
    fn from(f: ConfigFile) -> Self {
        Config {
            max_conns_per_client: f.max_conns_per_client,
            max_conns_total: f.max_conns_total,
            max_requests_per_client: f.max_requests_per_client,
            ipv4_prefix: f.ipv4_prefix,
            ipv6_prefix: f.ipv6_prefix,
            connect_rate: f.connect_rate.map(|r| r.into_rule(Strategy::Cooldown)),
            request_rate: f.request_rate.map(|r| r.into_rule(Strategy::SlidingWindow)),
            path_rules: f.path_rules.into_iter().map(PathRule::from).collect(),
            ban: f.ban.map(BanPolicy::from),
            max_tracked_clients: f.max_tracked_clients,
            when_full: match f.when_full {
                WhenFullFile::EvictStalest => WhenFull::EvictStalest,
                WhenFullFile::RefuseNew => WhenFull::RefuseNew,
            },
            exempt: f.exempt,
            overrides: f
                .overrides
                .into_iter()
                .map(|o| CidrLimit::new(o.network, o.max_conns_per_client))
                .collect(),
            handshake_timeout: f.handshake_timeout,
            idle_timeout: f.idle_timeout,
            min_receive_rate: f
                .min_receive_rate
                .map(|m| MinReceiveRate::new(m.bytes_per_sec, m.grace)),
            trusted_proxies: f.trusted_proxies,
            proxy_protocol: match f.proxy_protocol {
                ProxyProtocolFile::Off => ProxyProtocol::Off,
                ProxyProtocolFile::Required => ProxyProtocol::Required,
            },
            proxy_header_timeout: f.proxy_header_timeout,
            client_ip_header: f.client_ip_header,
            trusted_hops: f.trusted_hops,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MinRateFile {
    bytes_per_sec: u32,
    #[serde(with = "humantime_serde")]
    grace: Duration,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "snake_case")]
enum ProxyProtocolFile {
    #[default]
    Off,
    Required,
}

fn client_ip_header<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ClientIpHeader, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(serde::de::Error::custom)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateFile {
    events: u32,
    #[serde(with = "humantime_serde")]
    period: Duration,
    #[serde(default)]
    strategy: Option<StrategyFile>,
    #[serde(default)]
    burst: u32,
    #[serde(default)]
    dry_run: bool,
}

impl RateFile {
    fn into_rule(self, default_strategy: Strategy) -> RateLimit {
        let strategy = self.strategy.map_or(default_strategy, |s| match s {
            StrategyFile::Cooldown => Strategy::Cooldown,
            StrategyFile::FixedWindow => Strategy::FixedWindow,
            StrategyFile::SlidingWindow => Strategy::SlidingWindow,
            StrategyFile::TokenBucket => Strategy::TokenBucket,
        });
        RateLimit {
            dry_run: self.dry_run,
            ..RateLimit::new(self.events, self.period)
                .strategy(strategy)
                .burst(self.burst)
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum StrategyFile {
    Cooldown,
    FixedWindow,
    SlidingWindow,
    TokenBucket,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "snake_case")]
enum WhenFullFile {
    #[default]
    EvictStalest,
    RefuseNew,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PathRuleFile {
    path: String,
    #[serde(default, rename = "match")]
    matching: MatchFile,
    #[serde(default, deserialize_with = "method")]
    method: Option<http::Method>,
    rate: RateFile,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "snake_case")]
enum MatchFile {
    #[default]
    Exact,
    Prefix,
}

impl From<PathRuleFile> for PathRule {
    fn from(f: PathRuleFile) -> Self {
        PathRule {
            path: f.path,
            matching: match f.matching {
                MatchFile::Exact => PathMatch::Exact,
                MatchFile::Prefix => PathMatch::Prefix,
            },
            method: f.method,
            rate: f.rate.into_rule(Strategy::SlidingWindow),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BanFile {
    max_violations: u32,
    #[serde(with = "humantime_serde")]
    within: Duration,
    #[serde(with = "humantime_serde")]
    ban_for: Duration,
    #[serde(default)]
    escalate: bool,
    #[serde(default, with = "humantime_serde")]
    max_ban_for: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    jitter: Option<Duration>,
    #[serde(default)]
    dry_run: bool,
}

impl From<BanFile> for BanPolicy {
    fn from(f: BanFile) -> Self {
        BanPolicy {
            max_violations: f.max_violations,
            within: f.within,
            ban_for: f.ban_for,
            escalate: f.escalate,
            max_ban_for: f.max_ban_for.unwrap_or(f.ban_for),
            jitter: f.jitter.unwrap_or_default(),
            dry_run: f.dry_run,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideFile {
    #[serde(deserialize_with = "cidr")]
    network: Cidr,
    max_conns_per_client: usize,
}

fn cidr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(serde::de::Error::custom)
}

fn cidrs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Cidr>, D::Error> {
    /// One list element, parsed where serde can still name its index.
    struct Item(Cidr);
    impl<'de> Deserialize<'de> for Item {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            cidr(d).map(Item)
        }
    }
    Vec::<Item>::deserialize(d).map(|items| items.into_iter().map(|Item(c)| c).collect())
}

fn method<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<http::Method>, D::Error> {
    let text = String::deserialize(d)?;
    http::Method::from_bytes(text.as_bytes())
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!("{text:?} is not an HTTP method")))
}
