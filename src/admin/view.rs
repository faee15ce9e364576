//! What the admin API answers with: the stats, clients and bans as JSON, the config in force in
//! the config file's own JSON form (so that it can be edited and sent back with `PUT`), and the
//! stats as Prometheus text.

use std::fmt::Write as _;

use serde_json::{json, Map, Value};

use crate::limiter::{ByReason, ClientStats, Stats};
use crate::series;
use crate::Config;

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
        "fair_share": stats.fair_share.as_ref().map(fair_share),
    })
}

/// Fair share: each budget's use, watermark, ceiling and level, and the reclaims.
fn fair_share(fair: &crate::stats::FairShareStats) -> Value {
    let budget = |b: &crate::stats::BudgetStats| {
        json!({
            "budget": b.budget,
            "held": b.held,
            "watermark": b.watermark,
            "ceiling": b.ceiling,
            "level": b.level,
            "over_share": b.over_share,
        })
    };
    json!({
        "connections": budget(&fair.connections),
        "requests": budget(&fair.requests),
        "reclaims_asked": fair.reclaims_asked,
        "reclaimed": fair.reclaimed,
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
        "nodes": fleet.nodes.iter().map(|n| json!({
            "node": n.node,
            "this_node": n.this_node,
            "connected": n.connected,
            "last_sync_age_ms": n.last_sync_age.map(|age| age.as_millis() as u64),
            "syncs": n.syncs,
            "sync_errors": n.sync_errors,
        })).collect::<Vec<_>>(),
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

/// The config in the JSON form [`Config::from_json_str`] reads back: its own `Serialize`, so
/// that what is shown and what is read are one schema.
pub(super) fn config(c: &Config) -> Value {
    serde_json::to_value(c)
        .expect("a config is named fields, strings, integers, booleans and checked fractions, which JSON holds")
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
