//! What the admin API answers with: the stats, clients and bans as JSON, the config in force in
//! the config file's own JSON form (so that it can be edited and sent back with `PUT`), and the
//! stats as Prometheus text.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::limiter::{ByReason, ClientStats, Stats};
use crate::limits::{PathMatch, WhenFull};
use crate::listener::ProxyProtocol;
use crate::rate::{RateLimit, Strategy};
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
            (p.point.name().to_owned(), value)
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
        "points": points,
        "fleet": stats.fleet.map(|fleet| json!({
            "connected": fleet.connected,
            "last_sync_age_ms": fleet.last_sync_age.map(|age| age.as_millis() as u64),
            "sync_errors": fleet.sync_errors,
        })),
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
        },
    })
}

/// The stats as Prometheus text, with the names of the `metrics` feature's series (written
/// here directly, with no recorder to install): each family's `# HELP`, `# TYPE` and samples.
pub(super) fn prometheus(stats: &Stats) -> String {
    let mut text = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, u64)>| {
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(text, "{name}{labels} {value}");
        }
    };
    let per_point = |pick: &dyn Fn(&crate::limiter::PointStats) -> Option<u64>| {
        stats
            .points
            .iter()
            .filter_map(|p| pick(p).map(|v| (format!("{{point=\"{}\"}}", p.point.name()), v)))
            .collect::<Vec<_>>()
    };
    family(
        "connlimit_open_connections",
        "gauge",
        "Connections holding a permit now, by admission point.",
        per_point(&|p| {
            p.point
                .counts_connections()
                .then_some(p.open_connections as u64)
        }),
    );
    family(
        "connlimit_in_flight_requests",
        "gauge",
        "Requests holding a permit now, by admission point.",
        per_point(&|p| {
            p.point
                .counts_requests()
                .then_some(p.in_flight_requests as u64)
        }),
    );
    family(
        "connlimit_admitted_total",
        "counter",
        "Connections and requests admitted, by admission point.",
        per_point(&|p| Some(p.admitted)),
    );
    let mut rejected = Vec::new();
    let mut closed = Vec::new();
    for p in &stats.points {
        for (reason, n) in p.rejected.iter() {
            rejected.push((
                format!("{{point=\"{}\",reason=\"{reason}\"}}", p.point.name()),
                n,
            ));
        }
        for (reason, n) in p.closed.iter() {
            closed.push((
                format!("{{point=\"{}\",reason=\"{reason}\"}}", p.point.name()),
                n,
            ));
        }
    }
    family(
        "connlimit_rejected_total",
        "counter",
        "Connections and requests refused, by admission point and reason.",
        rejected,
    );
    family(
        "connlimit_closed_total",
        "counter",
        "Admitted connections closed early, by admission point and reason.",
        closed,
    );
    let single = |v: u64| vec![(String::new(), v)];
    family(
        "connlimit_tracked_clients",
        "gauge",
        "Clients the limiter keeps a record of.",
        single(stats.tracked_clients as u64),
    );
    family(
        "connlimit_dry_run_total",
        "counter",
        "Refusals that dry-run rules would have made, but let through.",
        single(stats.dry_run),
    );
    family(
        "connlimit_bans_total",
        "counter",
        "Bans imposed, by the ban policy or the operator.",
        single(stats.bans),
    );
    family(
        "connlimit_evictions_total",
        "counter",
        "Drained clients forgotten early to make room under max_tracked_clients.",
        single(stats.evictions),
    );
    text
}
