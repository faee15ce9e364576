//! The limiter's figures as metric series: one table of names, kinds and help texts, and the
//! samples a [`Stats`] snapshot gives, which both outputs write: the `metrics` facade
//! (`crate::metrics`) and the admin's Prometheus text (`crate::admin`). A series is named once,
//! here, so the two can never disagree.

use crate::limiter::Stats;

/// Whether a series goes up and down or only up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Gauge,
    Counter,
}

impl Kind {
    /// The Prometheus `# TYPE`.
    #[cfg_attr(not(feature = "admin"), allow(dead_code))]
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        }
    }
}

/// One metric: its name, kind and help text.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Family {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    pub(crate) help: &'static str,
}

const fn family(name: &'static str, kind: Kind, help: &'static str) -> Family {
    Family { name, kind, help }
}

pub(crate) static OPEN_CONNECTIONS: Family = family(
    "connlimit_open_connections",
    Kind::Gauge,
    "Connections holding a permit now, by admission point.",
);
pub(crate) static IN_FLIGHT_REQUESTS: Family = family(
    "connlimit_in_flight_requests",
    Kind::Gauge,
    "Requests holding a permit now, by admission point.",
);
pub(crate) static TRACKED_CLIENTS: Family = family(
    "connlimit_tracked_clients",
    Kind::Gauge,
    "Clients the limiter keeps a record of: something open, or rate or ban state.",
);
pub(crate) static ADMITTED: Family = family(
    "connlimit_admitted_total",
    Kind::Counter,
    "Connections and requests admitted, by admission point.",
);
pub(crate) static REJECTED: Family = family(
    "connlimit_rejected_total",
    Kind::Counter,
    "Connections and requests refused, by admission point and reason.",
);
pub(crate) static CLOSED: Family = family(
    "connlimit_closed_total",
    Kind::Counter,
    "Admitted connections cut early (a deadline or header timeout passed), by admission point \
     and cause.",
);
pub(crate) static DRY_RUN: Family = family(
    "connlimit_dry_run_total",
    Kind::Counter,
    "Refusals that dry-run rules would have made, but let through.",
);
pub(crate) static BANS: Family = family(
    "connlimit_bans_total",
    Kind::Counter,
    "Bans this node imposed, by the ban policy or the operator (not those applied from a fleet).",
);
pub(crate) static EVICTIONS: Family = family(
    "connlimit_evictions_total",
    Kind::Counter,
    "Drained clients forgotten early to make room under max_tracked_clients.",
);
pub(crate) static UNIDENTIFIED_REQUESTS: Family = family(
    "connlimit_unidentified_requests_total",
    Kind::Counter,
    "Requests a trusted proxy sent without naming a usable client.",
);
pub(crate) static FLEET_CONNECTED: Family = family(
    "connlimit_fleet_connected",
    Kind::Gauge,
    "With a fleet joined: 1 while the last sync reached its Redis, 0 otherwise.",
);
pub(crate) static FLEET_LAST_SYNC_AGE: Family = family(
    "connlimit_fleet_last_sync_age_seconds",
    Kind::Gauge,
    "With a fleet joined: seconds since the last successful sync.",
);
pub(crate) static FLEET_SYNC_ERRORS: Family = family(
    "connlimit_fleet_sync_errors_total",
    Kind::Counter,
    "With a fleet joined: syncs in which something failed (see connlimit_fleet_errors_total).",
);

pub(crate) static FLEET_ERRORS: Family = family(
    "connlimit_fleet_errors_total",
    Kind::Counter,
    "With a fleet joined: syncs in which a failure of this kind happened (connection, timeout, \
     auth, oom, cluster, tls, other).",
);
pub(crate) static FLEET_BANS_PUBLISHED: Family = family(
    "connlimit_fleet_bans_published_total",
    Kind::Counter,
    "With a fleet joined: bans and lifts this node published to the fleet.",
);
pub(crate) static FLEET_BANS_APPLIED: Family = family(
    "connlimit_fleet_bans_applied_total",
    Kind::Counter,
    "With a fleet joined: bans and lifts this node applied from the fleet.",
);
pub(crate) static FLEET_DUPLICATE_NAME: Family = family(
    "connlimit_fleet_duplicate_name",
    Kind::Gauge,
    "With a fleet joined: 1 while another live node uses this node's name, 0 otherwise.",
);

/// Every series, in the order the outputs write them.
pub(crate) static FAIR_LEVEL_CONNECTIONS: Family = family(
    "connlimit_fair_level_connections",
    Kind::Gauge,
    "With fair share on: the fair level of connections per client (the ceiling while every \
     client's demand fits).",
);
pub(crate) static FAIR_LEVEL_REQUESTS: Family = family(
    "connlimit_fair_level_requests",
    Kind::Gauge,
    "With fair share on: the fair level of in-flight requests per client (the ceiling while \
     every client's demand fits).",
);
pub(crate) static FAIR_OVER_CONNECTIONS: Family = family(
    "connlimit_fair_over_share_connections",
    Kind::Gauge,
    "With fair share on: clients holding more connections than the fair level.",
);
pub(crate) static FAIR_OVER_REQUESTS: Family = family(
    "connlimit_fair_over_share_requests",
    Kind::Gauge,
    "With fair share on: clients wanting more in-flight requests than the fair level.",
);
pub(crate) static FAIR_RECLAIMS_ASKED: Family = family(
    "connlimit_fair_reclaims_asked_total",
    Kind::Counter,
    "With fair share on: idle connections asked back from clients over their share (those given \
     back are in connlimit_closed_total as reclaimed_idle and reclaimed_goaway).",
);

pub(crate) static FAMILIES: [&Family; 22] = [
    &OPEN_CONNECTIONS,
    &IN_FLIGHT_REQUESTS,
    &TRACKED_CLIENTS,
    &ADMITTED,
    &REJECTED,
    &CLOSED,
    &DRY_RUN,
    &BANS,
    &EVICTIONS,
    &UNIDENTIFIED_REQUESTS,
    &FLEET_CONNECTED,
    &FLEET_LAST_SYNC_AGE,
    &FLEET_SYNC_ERRORS,
    &FLEET_ERRORS,
    &FLEET_BANS_PUBLISHED,
    &FLEET_BANS_APPLIED,
    &FLEET_DUPLICATE_NAME,
    &FAIR_LEVEL_CONNECTIONS,
    &FAIR_LEVEL_REQUESTS,
    &FAIR_OVER_CONNECTIONS,
    &FAIR_OVER_REQUESTS,
    &FAIR_RECLAIMS_ASKED,
];

/// One value of a series: its family, its labels (`point`, then `reason`, when it has them)
/// and its value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Sample {
    pub(crate) family: &'static Family,
    pub(crate) point: Option<&'static str>,
    pub(crate) reason: Option<&'static str>,
    pub(crate) value: f64,
}

impl Sample {
    /// The labels, as `(name, value)` pairs.
    pub(crate) fn labels(&self) -> impl Iterator<Item = (&'static str, &'static str)> {
        let point = self.point.map(|p| ("point", p));
        let reason = self.reason.map(|r| ("reason", r));
        point.into_iter().chain(reason)
    }
}

/// Every sample `stats` gives, family by family in [`FAMILIES`]' order. The fleet's series are
/// there only with a fleet joined; a point's gauge only for what the point counts.
pub(crate) fn samples(stats: &Stats) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut push = |family: &'static Family,
                    point: Option<&'static str>,
                    reason: Option<&'static str>,
                    value: f64| {
        samples.push(Sample {
            family,
            point,
            reason,
            value,
        })
    };
    for p in &stats.points {
        if p.point.counts_connections() {
            let value = p.open_connections as f64;
            push(&OPEN_CONNECTIONS, Some(p.point.name()), None, value);
        }
    }
    for p in &stats.points {
        if p.point.counts_requests() {
            let value = p.in_flight_requests as f64;
            push(&IN_FLIGHT_REQUESTS, Some(p.point.name()), None, value);
        }
    }
    push(&TRACKED_CLIENTS, None, None, stats.tracked_clients as f64);
    for p in &stats.points {
        push(&ADMITTED, Some(p.point.name()), None, p.admitted as f64);
    }
    for p in &stats.points {
        for (reason, n) in p.rejected.iter() {
            push(&REJECTED, Some(p.point.name()), Some(reason), n as f64);
        }
    }
    for p in &stats.points {
        for (reason, n) in p.closed.iter() {
            push(&CLOSED, Some(p.point.name()), Some(reason), n as f64);
        }
    }
    push(&DRY_RUN, None, None, stats.dry_run as f64);
    push(&BANS, None, None, stats.bans as f64);
    push(&EVICTIONS, None, None, stats.evictions as f64);
    let unidentified = stats.unidentified_requests as f64;
    push(&UNIDENTIFIED_REQUESTS, None, None, unidentified);
    if let Some(fleet) = &stats.fleet {
        push(
            &FLEET_CONNECTED,
            None,
            None,
            f64::from(u8::from(fleet.connected)),
        );
        if let Some(age) = fleet.last_sync_age {
            push(&FLEET_LAST_SYNC_AGE, None, None, age.as_secs_f64());
        }
        push(&FLEET_SYNC_ERRORS, None, None, fleet.sync_errors as f64);
        for error in &fleet.errors {
            push(&FLEET_ERRORS, None, Some(error.kind), error.count as f64);
        }
        push(
            &FLEET_BANS_PUBLISHED,
            None,
            None,
            fleet.bans_published as f64,
        );
        push(&FLEET_BANS_APPLIED, None, None, fleet.bans_applied as f64);
        let duplicate = f64::from(u8::from(fleet.duplicate_name.is_some()));
        push(&FLEET_DUPLICATE_NAME, None, None, duplicate);
    }
    if let Some(fair) = &stats.fair_share {
        let budgets = [
            (
                &fair.connections,
                &FAIR_LEVEL_CONNECTIONS,
                &FAIR_OVER_CONNECTIONS,
            ),
            (&fair.requests, &FAIR_LEVEL_REQUESTS, &FAIR_OVER_REQUESTS),
        ];
        for (budget, level, over) in budgets {
            if budget.budget == 0 {
                continue;
            }
            let value = budget.level.unwrap_or(budget.ceiling) as f64;
            push(level, None, None, value);
            push(over, None, None, budget.over_share as f64);
        }
        let asked = fair.reclaims_asked as f64;
        push(&FAIR_RECLAIMS_ASKED, None, None, asked);
    }
    samples
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Limiter};

    #[test]
    fn names_are_distinct_and_every_sample_is_in_the_table() {
        for (i, family) in FAMILIES.iter().enumerate() {
            assert!(family.name.starts_with("connlimit_"), "{}", family.name);
            assert_eq!(
                family.kind == Kind::Counter,
                family.name.ends_with("_total"),
                "{}: counters, and only counters, end in _total",
                family.name
            );
            assert!(
                FAMILIES[..i].iter().all(|f| f.name != family.name),
                "{} twice",
                family.name
            );
        }
        let limiter = Limiter::new(Config {
            max_conns_per_client: 1,
            ..Config::default()
        });
        let ip = "192.0.2.1".parse().unwrap();
        let _held = limiter.try_acquire(ip).unwrap();
        assert!(limiter.try_acquire(ip).is_err());
        let samples = samples(&limiter.stats());
        assert!(samples.iter().all(|s| FAMILIES.contains(&s.family)));
        let refused = samples
            .iter()
            .find(|s| s.family == &REJECTED && s.reason == Some("client_connections"))
            .unwrap();
        assert_eq!(refused.value, 1.0);
        assert_eq!(
            refused.labels().collect::<Vec<_>>(),
            [("point", "direct"), ("reason", "client_connections")]
        );
    }
}
