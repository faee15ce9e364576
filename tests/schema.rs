//! One schema for the config: what `Config` writes (its `Serialize`, which the admin API's
//! `GET /api/config` answers with) is what `Config::from_json_str` and `Config::from_toml_str`
//! read back, and the field reference (`src/guide/config_fields.md`) and `examples/config.toml`
//! name every field that writing shows, with the defaults it shows, and no field it does not.
//!
//! The list of fields is never written here: it is read from the JSON of two configs, the
//! default one (for the fields and sections everyone has, and their defaults) and one with every
//! optional part present and every list one long (for the fields of rates, bans, overrides,
//! path rules and `min_receive_rate`). So a field added to any of the config's types is missing
//! from the reference and the example until they say what it is.
#![cfg(feature = "serde")]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence};
use serde_json::{json, Value};
use tower_connlimit::keys::{KeyConfig, KeyTier, Tier};
use tower_connlimit::{
    ban::BanPolicy,
    client_ip::{ClientIpConfig, ClientIpHeader, Unidentified},
    config::{CidrLimit, FairShare, WhenFull},
    listener::{ListenerConfig, MinReceiveRate, ProxyProtocol},
    rate::{self, PathMatch, PathRule},
    Cidr, ClientKey, Config, RateLimit,
};

const REFERENCE: &str = "src/guide/config_fields.md";
const EXAMPLE: &str = "examples/config.toml";

/// Where rates sit in a config: their fields are documented once, in the reference's table of
/// rates, not under each of these.
const RATES: [&str; 5] = [
    "connect_rate",
    "request_rate",
    "path_rules[].rate",
    "keys.tiers[].request_rate",
    "keys.request_rate_per_address",
];

/// Where the reference's defaults for the fields of a rate are read back: a rate whose strategy
/// is left out counts by the sliding window here (as everywhere but `connect_rate`).
const RATE_DEFAULTS_AT: &str = "request_rate";

const STRATEGIES: [rate::Strategy; 4] = [
    rate::Strategy::Cooldown,
    rate::Strategy::FixedWindow,
    rate::Strategy::SlidingWindow,
    rate::Strategy::TokenBucket,
];

fn cidr(text: &str) -> Cidr {
    text.parse().unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

// ---- writing and reading back ----

/// Writes `config` as JSON and as TOML; each must read back as `config`.
fn read_back(config: &Config) -> Result<(), String> {
    let json = serde_json::to_string_pretty(config).map_err(|err| err.to_string())?;
    let from_json = Config::from_json_str(&json).map_err(|err| format!("{err} in\n{json}"))?;
    let toml = toml::to_string(config).map_err(|err| err.to_string())?;
    let from_toml = Config::from_toml_str(&toml).map_err(|err| format!("{err} in\n{toml}"))?;
    for (form, text, read) in [("JSON", &json, from_json), ("TOML", &toml, from_toml)] {
        if read != *config {
            return Err(format!(
                "{form} read back differently:\n{text}\n{read:#?}\n{config:#?}"
            ));
        }
    }
    Ok(())
}

/// Configs where the written form could go wrong: a rate of each strategy (a `connect_rate`
/// left without one would read back as a cooldown), dry-run flags, path rules, ban policies
/// with and without escalation (and a `max_ban_for` that differs from `ban_for` without it),
/// networks of both families and IPv4-mapped ones, every listener and client address option.
fn interesting_configs() -> Vec<Config> {
    let rate = RateLimit::new(5, Duration::from_millis(250));
    let proxies = vec![cidr("192.0.2.10/32"), cidr("2001:db8::/48")];
    let mut configs = vec![
        Config::default(),
        Config::from_file(EXAMPLE).unwrap(),
        Config {
            path_rules: vec![
                PathRule::exact("/login", rate).method("POST"),
                PathRule::prefix("/api/\"quoted\" \\ é", rate.dry_run()),
            ],
            ban: Some(BanPolicy::new(3, secs(60), secs(600))),
            when_full: WhenFull::RefuseNew,
            ..Config::default()
        },
        Config {
            ban: Some(
                BanPolicy::new(3, secs(60), secs(600))
                    .escalate(secs(86_400))
                    .jitter(Duration::from_millis(1500))
                    .dry_run(),
            ),
            ..Config::default()
        },
        Config {
            ban: Some(BanPolicy {
                max_ban_for: secs(7),
                ..BanPolicy::new(1, Duration::from_nanos(1), secs(3))
            }),
            ..Config::default()
        },
        Config {
            ipv4_prefix: 24,
            ipv6_prefix: 128,
            exempt: vec![
                cidr("10.0.0.0/8"),
                cidr("::1/128"),
                cidr("::ffff:192.0.2.0/120"),
            ],
            overrides: vec![
                CidrLimit::new(cidr("203.0.113.0/24"), 0),
                CidrLimit::new(cidr("2001:db8::/64"), usize::MAX >> 1),
            ],
            trusted_proxies: proxies.clone(),
            max_tracked_clients: 0,
            max_keys_per_network: 0,
            network_ipv4_prefix: 0,
            network_ipv6_prefix: 128,
            ..Config::default()
        },
        Config {
            trusted_proxies: proxies.clone(),
            listener: ListenerConfig {
                handshake_timeout: Duration::from_millis(1500),
                idle_timeout: Duration::new(300, 7),
                min_receive_rate: Some(MinReceiveRate::new(500, secs(10))),
                proxy_protocol: ProxyProtocol::Required,
                proxy_header_timeout: Duration::from_micros(250),
            },
            ..Config::default()
        },
    ];
    for strategy in STRATEGIES {
        configs.push(Config {
            connect_rate: Some(rate.strategy(strategy)),
            request_rate: Some(rate.strategy(strategy).burst(9).dry_run()),
            ..Config::default()
        });
    }
    for header in ClientIpHeader::ALL {
        for unidentified in [Unidentified::CountAsProxy, Unidentified::Refuse] {
            configs.push(Config {
                trusted_proxies: proxies.clone(),
                client_ip: ClientIpConfig {
                    header,
                    trusted_hops: 64,
                    unidentified,
                },
                ..Config::default()
            });
        }
    }
    configs
}

#[test]
fn interesting_configs_read_back_as_they_were_written() {
    for config in interesting_configs() {
        config.validate().unwrap();
        read_back(&config).unwrap_or_else(|problem| panic!("{problem}"));
    }
}

#[test]
fn durations_and_names_are_written_as_config_files_write_them() {
    let config = Config {
        connect_rate: Some(RateLimit::new(1, Duration::from_millis(250))),
        exempt: vec![cidr("::ffff:10.0.0.0/104")],
        listener: ListenerConfig {
            idle_timeout: secs(90),
            ..ListenerConfig::default()
        },
        ..Config::default()
    };
    let json = serde_json::to_value(&config).unwrap();
    assert_eq!(json["listener"]["idle_timeout"], "1m 30s");
    assert_eq!(json["listener"]["handshake_timeout"], "0s");
    // Written with its strategy, so that the field's own default in files (cooldown) does not
    // change it.
    assert_eq!(
        json["connect_rate"],
        json!({"events": 1, "period": "250ms", "strategy": "sliding_window", "burst": 0,
               "dry_run": false})
    );
    assert_eq!(json["exempt"], json!(["10.0.0.0/8"]));
    assert_eq!(json["when_full"], "evict_stalest");
    assert_eq!(json["client_ip"]["header"], "none");
    let toml = toml::to_string(&config).unwrap();
    assert!(toml.contains("idle_timeout = \"1m 30s\""), "{toml}");
}

fn duration_up_to(longest: Duration) -> impl Strategy<Value = Duration> {
    let nanos = u64::try_from(longest.as_nanos()).unwrap();
    prop_oneof![
        Just(Duration::ZERO),
        (0..=nanos / 1_000_000).prop_map(Duration::from_millis),
        (0..=nanos).prop_map(Duration::from_nanos),
    ]
}

/// The longest duration a config accepts.
const LONGEST: Duration = Duration::from_secs(100 * 365 * 86_400);

fn positive_duration() -> impl Strategy<Value = Duration> {
    duration_up_to(LONGEST).prop_map(|d| d.max(Duration::from_nanos(1)))
}

fn count() -> impl Strategy<Value = usize> {
    // TOML integers are i64.
    prop_oneof![Just(0), 1..=1_000usize, 0..=i64::MAX as usize]
}

fn network() -> impl Strategy<Value = Cidr> {
    let v4 =
        (any::<u32>(), 0..=32u8).prop_map(|(bits, len)| (IpAddr::from(Ipv4Addr::from(bits)), len));
    let v6 = (any::<u128>(), 0..=128u8)
        .prop_map(|(bits, len)| (IpAddr::from(Ipv6Addr::from(bits)), len));
    prop_oneof![v4, v6].prop_map(|(ip, len)| Cidr::from(ClientKey::new(ip, len.min(32), len)))
}

/// Up to `most` networks, none twice.
fn networks(most: usize) -> impl Strategy<Value = Vec<Cidr>> {
    proptest::collection::vec(network(), 0..=most).prop_map(|mut list| {
        let mut seen = HashSet::new();
        list.retain(|cidr| seen.insert(*cidr));
        list
    })
}

fn rate_rule() -> impl Strategy<Value = RateLimit> {
    // At least a nanosecond per event: a period of 1 ms or more for up to 10^6 events.
    let period =
        (1_000_000..=u64::try_from(LONGEST.as_nanos()).unwrap()).prop_map(Duration::from_nanos);
    (
        1..=1_000_000u32,
        prop_oneof![period, Just(secs(1)), Just(Duration::from_millis(100))],
        proptest::sample::select(STRATEGIES.to_vec()),
        any::<u32>(),
        any::<bool>(),
    )
        .prop_map(|(events, period, strategy, burst, dry_run)| RateLimit {
            dry_run,
            ..RateLimit::new(events, period)
                .strategy(strategy)
                .burst(burst)
        })
}

fn path_rule() -> impl Strategy<Value = PathRule> {
    // Quotes, backslashes and non-ASCII test the formats' string escapes.
    let path = proptest::collection::vec(
        proptest::sample::select(vec!['a', '/', '"', '\\', 'é', ' ']),
        0..8,
    )
    .prop_map(|chars| format!("/{}", chars.into_iter().collect::<String>()));
    let method = proptest::option::of(proptest::sample::select(vec!["GET", "POST", "M-SEARCH"]));
    let name = proptest::option::of(proptest::sample::select(vec!["login", "api-v2", "x.y"]));
    (path, any::<bool>(), method, name, rate_rule()).prop_map(
        |(path, prefix, method, name, rate)| PathRule {
            name: name.map(str::to_owned),
            path,
            matching: if prefix {
                PathMatch::Prefix
            } else {
                PathMatch::Exact
            },
            method: method.map(str::to_owned),
            rate,
        },
    )
}

fn ban() -> impl Strategy<Value = BanPolicy> {
    (
        1..=1_000u32,
        prop_oneof![
            Just(secs(60)),
            duration_up_to(LONGEST).prop_map(|d| d.max(Duration::from_millis(1)))
        ],
        positive_duration(),
        any::<bool>(),
        duration_up_to(LONGEST),
        duration_up_to(LONGEST),
        any::<bool>(),
    )
        .prop_map(
            |(max_violations, within, ban_for, escalate, max_ban_for, jitter, dry_run)| BanPolicy {
                max_violations,
                within,
                ban_for,
                escalate,
                max_ban_for: if escalate {
                    max_ban_for.max(ban_for)
                } else {
                    max_ban_for
                },
                jitter,
                dry_run,
            },
        )
}

fn listener() -> impl Strategy<Value = ListenerConfig> {
    let min_rate = (1..=u32::MAX, duration_up_to(LONGEST))
        .prop_map(|(bytes, grace)| MinReceiveRate::new(bytes, grace));
    (
        duration_up_to(LONGEST),
        duration_up_to(LONGEST),
        proptest::option::of(min_rate),
        any::<bool>(),
        positive_duration(),
    )
        .prop_map(
            |(
                handshake_timeout,
                idle_timeout,
                min_receive_rate,
                required,
                proxy_header_timeout,
            )| {
                ListenerConfig {
                    handshake_timeout,
                    idle_timeout,
                    min_receive_rate,
                    proxy_protocol: if required {
                        ProxyProtocol::Required
                    } else {
                        ProxyProtocol::Off
                    },
                    proxy_header_timeout,
                }
            },
        )
}

fn client_ip() -> impl Strategy<Value = ClientIpConfig> {
    (
        proptest::sample::select(ClientIpHeader::ALL.to_vec()),
        1..=64usize,
        any::<bool>(),
    )
        .prop_map(|(header, trusted_hops, refuse)| ClientIpConfig {
            header,
            trusted_hops,
            unidentified: if refuse {
                Unidentified::Refuse
            } else {
                Unidentified::CountAsProxy
            },
        })
}

/// Valid configs of every shape.
fn config() -> impl Strategy<Value = Config> {
    let counts = (count(), count(), count(), count(), count(), any::<bool>());
    let prefixes = (0..=32u8, 0..=128u8, 0..=32u8, 0..=128u8);
    let lists = (
        networks(3),
        proptest::collection::vec((network(), count()), 0..=3),
        networks(3),
        proptest::collection::vec(path_rule(), 0..=2).prop_map(|mut rules| {
            // Names are unique among the path rules.
            for (i, rule) in rules.iter_mut().enumerate() {
                rule.name = rule.name.take().map(|name| format!("{name}{i}"));
            }
            rules
        }),
    );
    let rules = (
        proptest::option::of(rate_rule()),
        proptest::option::of(rate_rule()),
        proptest::option::of(ban()),
    );
    (
        counts,
        prefixes,
        lists,
        rules,
        listener(),
        client_ip(),
        (keys(), fair_share(), count()),
    )
        .prop_map(
            |(
                counts,
                prefixes,
                lists,
                rules,
                listener,
                client_ip,
                (keys, fair_share, requests_total),
            )| {
                let (per_client, total, requests, tracked, per_network, refuse_new) = counts;
                let (ipv4_prefix, ipv6_prefix, network_ipv4_prefix, network_ipv6_prefix) = prefixes;
                let (exempt, overrides, trusted_proxies, path_rules) = lists;
                let (connect_rate, request_rate, ban) = rules;
                let mut config = Config {
                    max_conns_per_client: per_client,
                    max_conns_total: total,
                    max_requests_per_client: requests,
                    max_requests_total: requests_total,
                    fair_share,
                    ipv4_prefix,
                    ipv6_prefix,
                    exempt,
                    overrides: overrides
                        .into_iter()
                        .map(|(network, limit)| CidrLimit::new(network, limit))
                        .collect(),
                    connect_rate,
                    request_rate,
                    path_rules,
                    ban,
                    max_tracked_clients: tracked,
                    when_full: if refuse_new {
                        WhenFull::RefuseNew
                    } else {
                        WhenFull::EvictStalest
                    },
                    max_keys_per_network: per_network,
                    network_ipv4_prefix,
                    network_ipv6_prefix,
                    trusted_proxies,
                    listener,
                    client_ip,
                    keys,
                };
                make_consistent(&mut config);
                config
            },
        )
}

/// Fair share's settings, on or off; `make_consistent` fits them to the budgets. The watermark
/// in hundredths, which JSON and TOML write exactly.
fn fair_share() -> impl Strategy<Value = FairShare> {
    (any::<bool>(), 1..=100u32, count(), count(), any::<bool>()).prop_map(
        |(enabled, watermark, ceiling, request_ceiling, reclaim)| FairShare {
            enabled,
            watermark: f64::from(watermark) / 100.0,
            ceiling,
            request_ceiling,
            reclaim,
        },
    )
}

/// Keyed requests' limits: up to two tiers, a default one, an assignment, limits per address.
fn keys() -> impl Strategy<Value = KeyConfig> {
    let tier = (count(), proptest::option::of(rate_rule()));
    (
        proptest::collection::vec(tier, 0..=2),
        any::<bool>(),
        any::<u64>(),
        count(),
        proptest::option::of(rate_rule()),
    )
        .prop_map(|(tiers, default, fingerprint, per_address, rate)| {
            let tiers: Vec<Tier> = (tiers.into_iter().enumerate())
                .map(|(i, (max_requests, request_rate))| Tier {
                    name: format!("tier{i}"),
                    max_requests,
                    request_rate,
                })
                .collect();
            let first = tiers.first().map(|tier| tier.name.clone());
            KeyConfig {
                default_tier: first.clone().filter(|_| default),
                assigned: (first.into_iter())
                    .map(|tier| KeyTier {
                        key: format!("key:{fingerprint:016x}").parse().unwrap(),
                        tier,
                    })
                    .collect(),
                tiers,
                max_requests_per_address: per_address,
                request_rate_per_address: rate,
            }
        })
}

/// Drops what `Config::validate` would refuse of an otherwise valid config: an override
/// narrower than a client or listed twice, and proxy settings with no proxy to trust or both
/// at once.
fn make_consistent(config: &mut Config) {
    let (v4, v6) = (config.ipv4_prefix, config.ipv6_prefix);
    let mut seen = HashSet::new();
    config.overrides.retain(|o| {
        let client = if o.network.network().is_ipv4() {
            v4
        } else {
            v6
        };
        o.network.prefix_len() <= client && seen.insert(o.network)
    });
    if config.trusted_proxies.is_empty() {
        config.listener.proxy_protocol = ProxyProtocol::Off;
    }
    if config.trusted_proxies.is_empty() || config.listener.proxy_protocol != ProxyProtocol::Off {
        config.client_ip.header = ClientIpHeader::None;
    }
    // Fair share needs a budget, and each ceiling lies between the static cap and the budget.
    let fair = &mut config.fair_share;
    if config.max_conns_total == 0 && config.max_requests_total == 0 {
        fair.enabled = false;
    }
    for (ceiling, per_client, total) in [
        (
            &mut fair.ceiling,
            config.max_conns_per_client,
            config.max_conns_total,
        ),
        (
            &mut fair.request_ceiling,
            config.max_requests_per_client,
            config.max_requests_total,
        ),
    ] {
        if per_client > total {
            *ceiling = 0;
        } else if *ceiling != 0 && total != 0 {
            *ceiling = (*ceiling).clamp(per_client, total);
        }
    }
    // An address's requests share one count, keyed or not: one strategy.
    if let (Some(own), Some(address)) = (
        &config.request_rate,
        &mut config.keys.request_rate_per_address,
    ) {
        address.strategy = own.strategy;
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|cases| cases.parse().ok())
            .unwrap_or(256),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    /// Any valid config, written as JSON or TOML, reads back as itself.
    #[test]
    fn any_config_reads_back_as_it_was_written(config in config()) {
        prop_assert!(config.validate().is_ok(), "{:?}", config.validate());
        if let Err(problem) = read_back(&config) {
            return Err(TestCaseError::fail(problem));
        }
    }
}

// ---- the schema, as writing shows it ----

/// A config with every optional part present and every list one long, so that its JSON shows
/// every field of every part.
fn filled() -> Config {
    let rate = RateLimit::new(5, secs(1));
    Config {
        exempt: vec![cidr("10.0.0.0/8")],
        overrides: vec![CidrLimit::new(cidr("203.0.113.0/24"), 200)],
        connect_rate: Some(rate.strategy(rate::Strategy::Cooldown)),
        request_rate: Some(rate),
        path_rules: vec![PathRule::exact("/login", rate).method("POST")],
        ban: Some(BanPolicy::new(20, secs(60), secs(600))),
        trusted_proxies: vec![cidr("192.0.2.10/32")],
        listener: ListenerConfig {
            min_receive_rate: Some(MinReceiveRate::new(500, secs(10))),
            ..ListenerConfig::default()
        },
        keys: KeyConfig {
            tiers: vec![Tier::new("pro").max_requests(20).request_rate(rate)],
            default_tier: Some("pro".into()),
            assigned: vec![KeyTier {
                key: "key:00112233445566ff".parse().unwrap(),
                tier: "pro".into(),
            }],
            max_requests_per_address: 50,
            request_rate_per_address: Some(rate),
        },
        ..Config::default()
    }
}

/// Every field path in `value` with its value: `listener.idle_timeout`, and `path_rules[].rate`
/// for the fields of a list's elements.
fn paths(value: &Value) -> BTreeMap<String, Value> {
    fn walk(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
        match value {
            Value::Object(fields) => {
                for (name, field) in fields {
                    let path = if prefix.is_empty() {
                        name.clone()
                    } else {
                        format!("{prefix}.{name}")
                    };
                    out.insert(path.clone(), field.clone());
                    walk(&path, field, out);
                }
            }
            Value::Array(items) => {
                for item in items {
                    walk(&format!("{prefix}[]"), item, out);
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeMap::new();
    walk("", value, &mut out);
    out
}

/// The field of a rate that `path` names (`events` for `path_rules[].rate.events`), if it is one.
fn rate_field(path: &str) -> Option<&str> {
    RATES
        .iter()
        .find_map(|rate| path.strip_prefix(rate)?.strip_prefix('.'))
}

/// What the reference must document.
struct Schema {
    /// Every field but those of rates, with its default when the default config has it.
    fields: BTreeMap<String, Option<Value>>,
    /// The fields of a rate.
    rate_fields: BTreeSet<String>,
    /// The filled config's JSON, where a field's example values come from.
    filled: Value,
}

impl Schema {
    fn read() -> Schema {
        let defaults = paths(&serde_json::to_value(Config::default()).unwrap());
        let filled = serde_json::to_value(filled()).unwrap();
        let mut fields = BTreeMap::new();
        let mut rate_fields = BTreeSet::new();
        for path in paths(&filled).into_keys() {
            let default = defaults.get(&path);
            if let Some(field) = rate_field(&path) {
                rate_fields.insert(field.to_owned());
            } else if !default.is_some_and(Value::is_object) {
                // A section (an object even in the default config) is a table of fields, not
                // a field.
                fields.insert(path, default.cloned());
            }
        }
        Schema {
            fields,
            rate_fields,
            filled,
        }
    }
}

// ---- the reference ----

/// What the reference says a field's default is.
#[derive(Clone, Debug, PartialEq)]
enum Stated {
    /// `required`: there is none; leaving the field out is an error.
    Required,
    /// `none`: left out, the field is absent (`null` in JSON).
    None,
    /// A value as the file writes it, in backticks: `` `100` ``, `` `"5s"` ``, `` `[]` ``.
    Value(Value),
    /// `same as `ban_for``: the value of that field of the same table.
    SameAs(String),
}

impl std::fmt::Display for Stated {
    /// As the reference writes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stated::Required => f.write_str("required"),
            Stated::None => f.write_str("none"),
            Stated::Value(value) => write!(f, "`{value}`"),
            Stated::SameAs(field) => write!(f, "same as `{field}`"),
        }
    }
}

impl Stated {
    /// Reads the start of a default cell; what follows it is explanation.
    fn parse(cell: &str) -> Result<Stated, String> {
        let backticked = |text: &str| Some(text.strip_prefix('`')?.split('`').next()?.to_owned());
        if cell.starts_with("required") {
            Ok(Stated::Required)
        } else if cell.starts_with("none") {
            Ok(Stated::None)
        } else if let Some(rest) = cell.strip_prefix("same as ") {
            backticked(rest)
                .map(Stated::SameAs)
                .ok_or_else(|| format!("`{cell}`: same as what?"))
        } else if let Some(literal) = backticked(cell) {
            serde_json::from_str(&literal)
                .map(Stated::Value)
                .map_err(|err| {
                    format!("`{cell}`: {literal} is not a value as a file writes it: {err}")
                })
        } else {
            Err(format!(
                "`{cell}`: a default is `required`, `none`, `same as `field``, or a value in backticks"
            ))
        }
    }

    /// Whether `value`, the field's value where the default applies, is this default; `table`
    /// is the object holding the field, for `SameAs`.
    fn describes(&self, value: Option<&Value>, table: &Value) -> bool {
        match self {
            Stated::Required => false,
            Stated::None => value.is_none_or(Value::is_null),
            Stated::Value(expected) => value == Some(expected),
            Stated::SameAs(other) => value.is_some() && value == table.get(other),
        }
    }
}

/// The reference's tables: for each, its rows as (field, default cell).
fn tables(markdown: &str) -> Vec<Vec<(String, String)>> {
    let mut tables = Vec::new();
    let mut rows: Option<Vec<(String, String)>> = None;
    for line in markdown.lines().map(str::trim) {
        let Some(inner) = line.strip_prefix('|') else {
            tables.extend(rows.take());
            continue;
        };
        let cells: Vec<&str> = inner.split('|').map(str::trim).collect();
        match &mut rows {
            // The header row, then the separator.
            None => rows = Some(Vec::new()),
            Some(_) if cells[0].starts_with("---") => {}
            Some(rows) => rows.push((cells[0].trim_matches('`').to_owned(), cells[1].to_owned())),
        }
    }
    tables.extend(rows);
    tables
}

/// What is wrong with the reference `markdown`: its first table must name every field of the
/// config (but a rate's) with its default, its second every field of a rate; neither may name
/// a field the config does not have.
fn reference_problems(markdown: &str, schema: &Schema) -> Vec<String> {
    let tables = tables(markdown);
    let [fields, rate_fields] = tables.as_slice() else {
        return vec![format!(
            "{} tables, not 2: the fields, and a rate's fields",
            tables.len()
        )];
    };
    let mut problems = coverage("", fields, schema.fields.keys());
    problems.extend(coverage("rate.", rate_fields, &schema.rate_fields));
    let known = |(field, _): &&(String, String)| schema.fields.contains_key(field);
    let fields = stated("", fields.iter().filter(known), &mut problems);
    let known = |(field, _): &&(String, String)| schema.rate_fields.contains(field);
    let rate_fields = stated("rate.", rate_fields.iter().filter(known), &mut problems);
    // The fields of tables that the default config does not have (a ban, an override), by
    // table; the others have their default in the default config.
    let mut in_tables: BTreeMap<String, Vec<(String, Stated)>> = BTreeMap::new();
    for (field, stated) in fields {
        match (&schema.fields[&field], field.rsplit_once('.')) {
            (Some(value), _) if !stated.describes(Some(value), &Value::Null) => {
                problems.push(format!("{field}: the default is {value}, not {stated}"));
            }
            (None, Some((table, name))) => {
                let table = in_tables.entry(table.to_owned()).or_default();
                table.push((name.to_owned(), stated));
            }
            _ => {}
        }
    }
    if !rate_fields.is_empty() {
        in_tables.insert(RATE_DEFAULTS_AT.to_owned(), rate_fields);
    }
    for (table, fields) in &in_tables {
        problems.extend(table_problems(table, fields, &schema.filled));
    }
    problems
}

/// Each row with the default its cell states, and a problem for each cell that states none.
fn stated<'a>(
    prefix: &str,
    rows: impl Iterator<Item = &'a (String, String)>,
    problems: &mut Vec<String>,
) -> Vec<(String, Stated)> {
    rows.filter_map(|(field, cell)| match Stated::parse(cell) {
        Ok(stated) => Some((field.clone(), stated)),
        Err(problem) => {
            problems.push(format!("{prefix}{field}: {problem}"));
            None
        }
    })
    .collect()
}

/// Which fields of the schema `rows` leave out, and which they name that it lacks.
fn coverage<'a>(
    prefix: &str,
    rows: &[(String, String)],
    schema: impl IntoIterator<Item = &'a String>,
) -> Vec<String> {
    let documented: BTreeSet<&String> = rows.iter().map(|(field, _)| field).collect();
    let schema: BTreeSet<&String> = schema.into_iter().collect();
    let mut problems: Vec<String> = schema
        .difference(&documented)
        .map(|field| format!("{prefix}{field} is not documented"))
        .collect();
    problems.extend(
        documented
            .difference(&schema)
            .map(|field| format!("{prefix}{field} is documented but the config has no such field")),
    );
    problems
}

/// Checks the stated defaults of the fields of the table at `at` (`ban`, `overrides[]`) by
/// loading it with only its required fields (their values taken from `filled`): each other
/// field must read back as its default, and each required one left out must be an error.
fn table_problems(at: &str, fields: &[(String, Stated)], filled: &Value) -> Vec<String> {
    let sample = find(filled, at);
    let required: serde_json::Map<String, Value> = fields
        .iter()
        .filter(|(_, default)| *default == Stated::Required)
        .map(|(name, _)| (name.clone(), sample[name].clone()))
        .collect();
    // A table that names others (a key's tier) is loaded with what it names.
    let context = referred_to(at, filled);
    let alone = |table: Value| merged(context.clone(), placed(at, table)).to_string();
    let loaded = match Config::from_json_str(&alone(Value::Object(required.clone()))) {
        Ok(config) => serde_json::to_value(config).unwrap(),
        Err(err) => return vec![format!("{at} with its required fields only: {err}")],
    };
    let table = find(&loaded, at);
    let mut problems = Vec::new();
    for (name, default) in fields {
        if *default == Stated::Required {
            let mut short = required.clone();
            short.remove(name);
            if Config::from_json_str(&alone(Value::Object(short))).is_ok() {
                problems.push(format!(
                    "{at}.{name} is said to be required, but may be left out"
                ));
            }
        } else if !default.describes(table.get(name), table) {
            let value = table.get(name).unwrap_or(&Value::Null);
            problems.push(format!(
                "{at}.{name}: left out, it is {value}, not {default}"
            ));
        }
    }
    problems
}

/// What the table at `at` must find elsewhere in a config to be valid, from `filled`: the
/// tiers that `keys.assigned[]` and `keys.default_tier` name.
fn referred_to(at: &str, filled: &Value) -> Value {
    if at.starts_with("keys.") && !at.starts_with("keys.tiers") {
        json!({ "keys": { "tiers": filled["keys"]["tiers"] } })
    } else {
        json!({})
    }
}

/// `over` laid over `base`, objects merged field by field.
fn merged(base: Value, over: Value) -> Value {
    match (base, over) {
        (Value::Object(mut base), Value::Object(over)) => {
            for (name, value) in over {
                let inner = base.remove(&name).unwrap_or(Value::Null);
                base.insert(name, merged(inner, value));
            }
            Value::Object(base)
        }
        (_, over) => over,
    }
}

/// A config's JSON with `value` at `at`, as the only element of a list for `name[]`.
fn placed(at: &str, value: Value) -> Value {
    at.rsplit('.')
        .fold(value, |inner, name| match name.strip_suffix("[]") {
            Some(list) => json!({ list: [inner] }),
            None => json!({ name: inner }),
        })
}

/// The value at `at` in a config's JSON, the first element for `name[]`.
fn find<'a>(json: &'a Value, at: &str) -> &'a Value {
    at.split('.')
        .fold(json, |outer, name| match name.strip_suffix("[]") {
            Some(list) => &outer[list][0],
            None => &outer[name],
        })
}

fn read(file: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap()
}

#[test]
fn the_reference_documents_every_field_with_its_default_and_no_other() {
    let problems = reference_problems(&read(REFERENCE), &Schema::read());
    assert!(problems.is_empty(), "{REFERENCE}:\n{}", problems.join("\n"));
}

/// The check is not vacuous: it finds a field left out, one the config lacks, and a default
/// stated wrong, at the top, in a section, in a table and in a rate.
#[test]
fn the_reference_check_finds_what_is_missing_wrong_or_made_up() {
    let schema = Schema::read();
    let reference = read(REFERENCE);
    let edited = |row: &str, new_row: &str| -> Vec<String> {
        assert!(reference.contains(row), "{row}");
        reference_problems(&reference.replacen(row, new_row, 1), &schema)
    };
    for (field, undocumented) in [
        ("max_conns_total", "max_conns_total"),
        ("client_ip.unidentified", "client_ip.unidentified"),
        ("ban.jitter", "ban.jitter"),
        ("burst", "rate.burst"),
    ] {
        let row = format!("| `{field}` |");
        let line = reference
            .lines()
            .find(|line| line.starts_with(&row))
            .unwrap();
        assert_eq!(
            edited(&format!("{line}\n"), ""),
            [format!("{undocumented} is not documented")]
        );
    }
    for (row, new_row, problem) in [
        (
            "| `ipv4_prefix` |",
            "| `ipv4_mask` | `32` | made up |\n| `ipv4_prefix` |",
            "ipv4_mask is documented but the config has no such field",
        ),
        (
            "| `max_tracked_clients` | `1000000` |",
            "| `max_tracked_clients` | `100000` |",
            "max_tracked_clients: the default is 1000000, not `100000`",
        ),
        (
            "| `ban.escalate` | `false` |",
            "| `ban.escalate` | `true` |",
            "ban.escalate: left out, it is false, not `true`",
        ),
        (
            "| `dry_run` | `false` |",
            "| `dry_run` | none |",
            "request_rate.dry_run: left out, it is false, not none",
        ),
        (
            "| `ban.max_ban_for` | same as `ban_for` |",
            "| `ban.max_ban_for` | same as `within` |",
            "ban.max_ban_for: left out, it is \"10m\", not same as `within`",
        ),
        (
            "| `ban.within` | required |",
            "| `ban.within` | `\"1m\"` |",
            "ban with its required fields only: invalid config: ban: missing field `within` (line 1, column 44)",
        ),
        (
            "| `ban.jitter` | `\"0s\"` |",
            "| `ban.jitter` | required |",
            "ban.jitter is said to be required, but may be left out",
        ),
    ] {
        assert_eq!(edited(row, new_row), [problem], "{new_row}");
    }
}

// ---- the example ----

/// What is wrong with the example config `text`: it must load, and set every field (some rate
/// must set each of a rate's fields).
fn example_problems(text: &str, schema: &Schema) -> Vec<String> {
    if let Err(err) = Config::from_toml_str(text) {
        return vec![err.to_string()];
    }
    let table: toml::Table = toml::from_str(text).unwrap();
    let set = paths(&serde_json::to_value(table).unwrap());
    let rates: BTreeSet<&str> = set.keys().filter_map(|path| rate_field(path)).collect();
    let mut problems: Vec<String> = schema
        .fields
        .keys()
        .filter(|field| !set.contains_key(*field))
        .map(|field| format!("{field} is not set"))
        .collect();
    problems.extend(
        schema
            .rate_fields
            .iter()
            .filter(|field| !rates.contains(field.as_str()))
            .map(|field| format!("no rate sets {field}")),
    );
    problems
}

#[test]
fn the_example_sets_every_field() {
    let problems = example_problems(&read(EXAMPLE), &Schema::read());
    assert!(problems.is_empty(), "{EXAMPLE}:\n{}", problems.join("\n"));
}

#[test]
fn the_example_check_finds_a_field_left_out() {
    let schema = Schema::read();
    let example = read(EXAMPLE);
    let without = |line: &str| example.replace(&format!("\n{line}\n"), "\n");
    assert_eq!(
        example_problems(&without("unidentified = \"count_as_proxy\""), &schema),
        ["client_ip.unidentified is not set"]
    );
    assert_eq!(
        example_problems(&without("burst = 50"), &schema),
        ["no rate sets burst"]
    );
    assert_eq!(
        example_problems(&format!("{example}\nmade_up = 1\n"), &schema).len(),
        1
    );
}
