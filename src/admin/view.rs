//! What the admin API answers with: the stats, clients and bans as JSON, the config in force in
//! the config file's own JSON form (so that it can be edited and sent back with `PUT`), and the
//! stats as Prometheus text.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::limiter::{ByReason, ClientStats, Stats};
use crate::limits::WhenFull;
use crate::listener::ProxyProtocol;
use crate::rate::PathMatch;
use crate::rate::{RateLimit, Strategy};
use crate::series;
use crate::Config;

/// A duration as config files write it: `1m 30s`, `250ms`.
fn duration(d: Duration) -> Value {
    Value::String(humantime::format_duration(d).to_string())
}

/// The counts of `by_reason` with their names, zeros left out.
fn counts(by_reason: &ByReason) -> Value {
    Value::Object(
        by_reason
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(reason, n)| (reason.to_owned(), n.into()))
            .collect(),
    )
}

pub(super) fn stats(stats: &Stats) -> Value {
    let points: Map<String, Value> = stats
        .points
        .iter()
        .map(|p| {
            let value = json!({
                "open_connections": p.open_connections,
                "in_flight_requests": p.in_flight_requests,
                "admitted": p.admitted,
                "rejected": counts(&p.rejected),
                "closed": counts(&p.closed),
            });
            (p.name.to_owned(), value)
        })
        .collect();
    json!({
        "open_connections": stats.open_connections,
        "in_flight_requests": stats.in_flight_requests,
        "tracked_clients": stats.tracked_clients,
        "admitted_connections": stats.admitted_connections,
        "admitted_requests": stats.admitted_requests,
        "rejected": counts(&stats.rejected),
        "rejected_total": stats.rejected.total(),
        "closed": counts(&stats.closed),
        "dry_run": stats.dry_run,
        "bans": stats.bans,
        "evictions": stats.evictions,
        "unidentified_requests": stats.unidentified_requests,
        "points": points,
        "fleet": stats.fleet.as_ref().map(fleet),
    })
}

/// A fleet's status: the node, how its syncs go, its failures by kind and its bans.
fn fleet(fleet: &crate::stats::FleetStatus) -> Value {
    let errors: serde_json::Map<String, Value> = fleet
        .errors
        .iter()
        .map(|e| {
            (
                e.kind.to_owned(),
                json!({ "count": e.count, "last": e.last }),
            )
        })
        .collect();
    json!({
        "node": fleet.node,
        "connected": fleet.connected,
        "last_sync_age_ms": fleet.last_sync_age.map(|age| age.as_millis() as u64),
        "syncs": fleet.syncs,
        "sync_errors": fleet.sync_errors,
        "errors": errors,
        "bans_published": fleet.bans_published,
        "bans_applied": fleet.bans_applied,
        "duplicate_name": fleet.duplicate_name,
    })
}

pub(super) fn client(c: &ClientStats) -> Value {
    json!({
        "client": c.key.to_string(),
        "open_connections": c.open_connections,
        "in_flight_requests": c.in_flight_requests,
        "banned_for_secs": c.banned_for.map(|left| left.as_secs_f64()),
        "bans": c.bans,
    })
}

fn rate(rule: &RateLimit) -> Value {
    let strategy = match rule.strategy {
        Strategy::Cooldown => "cooldown",
        Strategy::FixedWindow => "fixed_window",
        Strategy::TokenBucket => "token_bucket",
        _ => "sliding_window",
    };
    json!({
        "events": rule.events,
        "period": duration(rule.period),
        "strategy": strategy,
        "burst": rule.burst,
        "dry_run": rule.dry_run,
    })
}

/// The config in the JSON form [`Config::from_json_str`] reads back.
pub(super) fn config(c: &Config) -> Value {
    let cidrs = |list: &[crate::Cidr]| -> Value {
        list.iter()
            .map(|cidr| Value::String(cidr.to_string()))
            .collect()
    };
    let listener = &c.listener;
    json!({
        "max_conns_per_client": c.max_conns_per_client,
        "max_conns_total": c.max_conns_total,
        "max_requests_per_client": c.max_requests_per_client,
        "ipv4_prefix": c.ipv4_prefix,
        "ipv6_prefix": c.ipv6_prefix,
        "exempt": cidrs(&c.exempt),
        "overrides": c.overrides.iter().map(|o| json!({
            "network": o.network.to_string(),
            "max_conns_per_client": o.max_conns_per_client,
        })).collect::<Vec<_>>(),
        "connect_rate": c.connect_rate.as_ref().map(rate),
        "request_rate": c.request_rate.as_ref().map(rate),
        "path_rules": c.path_rules.iter().map(|p| json!({
            "path": p.path,
            "match": if p.matching == PathMatch::Prefix { "prefix" } else { "exact" },
            "method": p.method,
            "rate": rate(&p.rate),
        })).collect::<Vec<_>>(),
        "ban": c.ban.map(|b| json!({
            "max_violations": b.max_violations,
            "within": duration(b.within),
            "ban_for": duration(b.ban_for),
            "escalate": b.escalate,
            "max_ban_for": duration(b.max_ban_for),
            "jitter": duration(b.jitter),
            "dry_run": b.dry_run,
        })),
        "max_tracked_clients": c.max_tracked_clients,
        "when_full": if c.when_full == WhenFull::RefuseNew { "refuse_new" } else { "evict_stalest" },
        "max_keys_per_network": c.max_keys_per_network,
        "network_ipv4_prefix": c.network_ipv4_prefix,
        "network_ipv6_prefix": c.network_ipv6_prefix,
        "trusted_proxies": cidrs(&c.trusted_proxies),
        "listener": {
            "handshake_timeout": duration(listener.handshake_timeout),
            "idle_timeout": duration(listener.idle_timeout),
            "min_receive_rate": listener.min_receive_rate.map(|m| json!({
                "bytes_per_sec": m.bytes_per_sec,
                "grace": duration(m.grace),
            })),
            "proxy_protocol": if listener.proxy_protocol == ProxyProtocol::Off { "off" } else { "required" },
            "proxy_header_timeout": duration(listener.proxy_header_timeout),
        },
        "client_ip": {
            "header": c.client_ip.header.as_str(),
            "trusted_hops": c.client_ip.trusted_hops,
            "unidentified": c.client_ip.unidentified.as_str(),
        },
    })
}

/// The stats as Prometheus text, with the names of the `metrics` feature's series (the one
/// table in `crate::series`, written here directly, with no recorder to install): each family's
/// `# HELP`, `# TYPE` and samples, every family listed even when it has no sample yet.
pub(super) fn prometheus(stats: &Stats) -> String {
    let samples = series::samples(stats);
    let mut text = String::new();
    for family in series::FAMILIES {
        let _ = writeln!(
            text,
            "# HELP {name} {help}\n# TYPE {name} {kind}",
            name = family.name,
            help = family.help,
            kind = family.kind.as_str()
        );
        for sample in samples.iter().filter(|s| s.family == family) {
            let labels: Vec<String> = sample
                .labels()
                .map(|(name, value)| format!("{name}=\"{value}\""))
                .collect();
            let labels = if labels.is_empty() {
                String::new()
            } else {
                format!("{{{}}}", labels.join(","))
            };
            let _ = writeln!(text, "{}{labels} {}", family.name, sample.value);
        }
    }
    text
}
