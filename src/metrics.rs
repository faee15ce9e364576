//! Metrics through the [`metrics`](https://docs.rs/metrics) facade: gauges and counters of what
//! the limiter has seen, for Prometheus or any other `metrics` exporter.
//!
//! # Pull, not push
//!
//! Nothing here runs on the hot path. The limiter already counts every admission and refusal in
//! its own atomics (the figures of [`Limiter::stats`]); [`Limiter::record_metrics`] reads one
//! [`Stats`] snapshot and writes every figure to the installed recorder. Call it:
//!
//! - **before rendering a scrape**, in the handler that serves `/metrics` (below): the figures
//!   are exact at the moment of the scrape, and nothing runs between scrapes;
//! - or **from a periodic task**, for exporters that push (StatsD, OTLP) or render on their own
//!   schedule:
//!
//! ```no_run
//! # async fn run(limiter: tower_connlimit::Limiter) {
//! let mut every = tokio::time::interval(std::time::Duration::from_secs(10));
//! tokio::spawn(async move {
//!     loop {
//!         every.tick().await;
//!         limiter.record_metrics();
//!     }
//! });
//! # }
//! ```
//!
//! Call [`describe_metrics`] once, after installing the recorder, for the help texts.
//!
//! # With Prometheus
//!
//! With [`metrics-exporter-prometheus`](https://docs.rs/metrics-exporter-prometheus) (its
//! recorder alone is enough: `default-features = false`), serving `/metrics` on an axum router:
//!
//! ```no_run
//! use axum::{http::header, routing::get, Router};
//! use metrics_exporter_prometheus::PrometheusBuilder;
//! use tower_connlimit::{Config, Limiter};
//!
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let limiter = Limiter::new(Config { max_conns_per_client: 10, ..Config::default() });
//! let prometheus = PrometheusBuilder::new().install_recorder()?;
//! tower_connlimit::metrics::describe_metrics();
//!
//! let metrics = get(move || {
//!     limiter.record_metrics(); // the figures as of this scrape
//!     let body = prometheus.render();
//!     async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body) }
//! });
//! let app: Router = Router::new().route("/metrics", metrics);
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
//! `examples/server.rs` does this behind `--metrics`.
//!
//! # Names and labels
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `connlimit_open_connections` | gauge | `point` (points that admit connections: `listener`, `make_service`, `direct`) | connections holding a permit now, by where they were admitted |
//! | `connlimit_in_flight_requests` | gauge | `point` (points that admit requests: `request_layer`, `direct`) | requests holding a permit now |
//! | `connlimit_tracked_clients` | gauge | — | clients with an entry in the limiter's map ([`Stats::tracked_clients`]) |
//! | `connlimit_admitted_total` | counter | `point` | connections and requests admitted |
//! | `connlimit_rejected_total` | counter | `point`, `reason` | connections and requests refused |
//! | `connlimit_closed_total` | counter | `point`, `reason` (`handshake_timeout`, `idle_timeout`, `min_receive_rate`, `header_timeout`, `reclaimed_idle`, `reclaimed_goaway`) | admitted connections cut early, by the listener's deadlines, `serve::Serve`'s header timeout and fair share's reclaims ([`Stats::closed`]) |
//! | `connlimit_dry_run_total` | counter | — | refusals dry-run rules would have made, but let through ([`Stats::dry_run`]) |
//! | `connlimit_bans_total` | counter | — | bans this node imposed, by the ban policy, [`Limiter::ban`] or `ban_network` (not those applied from a fleet) |
//! | `connlimit_evictions_total` | counter | — | drained clients forgotten early under `max_tracked_clients` ([`Stats::evictions`]): worth an alert when it rises |
//! | `connlimit_unidentified_requests_total` | counter | — | requests a trusted proxy sent without naming a usable client ([`Stats::unidentified_requests`]): worth an alert when it rises |
//! | `connlimit_fleet_connected` | gauge | — | with a fleet joined: 1 while its Redis answers, else 0 |
//! | `connlimit_fleet_last_sync_age_seconds` | gauge | — | with a fleet joined: seconds since the last successful sync |
//! | `connlimit_fleet_sync_errors_total` | counter | — | with a fleet joined: syncs in which something failed |
//! | `connlimit_fleet_errors_total` | counter | `reason` | with a fleet joined: syncs in which a failure of this kind happened (`connection`, `timeout`, `auth`, `oom`, `cluster`, `tls`, `other`) |
//! | `connlimit_fleet_bans_published_total` | counter | — | with a fleet joined: bans and lifts this node published |
//! | `connlimit_fleet_bans_applied_total` | counter | — | with a fleet joined: bans and lifts this node applied from the fleet |
//! | `connlimit_fleet_duplicate_name` | gauge | — | with a fleet joined: 1 while another live node uses this node's name |
//! | `connlimit_fair_level_connections` | gauge | — | with [fair share](crate::config::FairShare) on: the fair level of connections per client, which binds while the budget is contended (the ceiling while every client's demand fits) |
//! | `connlimit_fair_level_requests` | gauge | — | the same for the request budget |
//! | `connlimit_fair_over_share_connections` | gauge | — | with fair share on: clients holding more connections than the fair level |
//! | `connlimit_fair_over_share_requests` | gauge | — | with fair share on: clients wanting more in-flight requests than the fair level |
//! | `connlimit_fair_reclaims_asked_total` | counter | — | with fair share on: idle connections asked back from clients over their share (those given back are `connlimit_closed_total` with `reclaimed_idle`, `reclaimed_goaway`) |
//!
//! [`METRIC_NAMES`] lists every name.
//!
//! - `point` is the name of an admission point in use: `listener`, `make_service`,
//!   `request_layer`, `direct` (your own calls to the limiter). A point appears once a listener
//!   or layer is built on the limiter (a `ConnLimitLayer` brings both of its levels; `direct` is
//!   always there), so its series are there from the first scrape.
//! - `reason` is a stable name from [`Stats::rejected`](crate::Stats::rejected): the limiter's
//!   `client_connections`, `total_connections`, `client_requests`, `connect_rate`,
//!   `request_rate`, `path_rule`, `banned`, `tracked_clients_full`, `total_requests`, `fair_share`,
//!   and the points' own:
//!   `no_client_address` (every point but `direct`), and at the listener `proxy_untrusted`,
//!   `proxy_header_invalid`, `proxy_header_timeout`.
//! - Every reason of every point in use is written, zeros included, so that dashboards and
//!   alerts see each series from the first scrape rather than only after the first refusal.
//! - **No label ever holds a client IP or client key**: that would give every client a series
//!   of its own, and an attacker rotating addresses could grow the exporter's memory without
//!   bound. For per-client detail, ask the limiter: [`Limiter::top_clients`],
//!   [`Limiter::client`], [`Limiter::bans`].
//!
//! Counters are written with `absolute`: they are the limiter's counts since it was created, so
//! a restart starts them again at zero, as Prometheus' `rate()` and `increase()` expect. The
//! units (all counts) add no suffix to the names, even with the Prometheus exporter's
//! `set_enable_unit_suffix(true)`.
//!
//! # Cost
//!
//! The admission path does nothing for metrics, with or without this feature. Each
//! [`Limiter::record_metrics`] call takes one [`Limiter::stats`] snapshot (a few relaxed atomic
//! loads per point and reason, no lock, no walk over the clients) and writes some tens of
//! series to the recorder, each a lookup of a fixed key: microseconds, once per scrape or tick. [`Stats`] is the same data;
//! read it directly if you publish figures some other way.
//!
//! # Several limiters in one process
//!
//! Every limiter writes the same series, so two limiters recording into one recorder overwrite
//! each other's gauges, and each counter shows the larger of the two counts. Use one limiter per
//! process (one limiter can serve several listeners and layers), call `record_metrics` on one of
//! them only, or give each its own recorder with [`metrics::with_local_recorder`][local].
//!
//! [local]: https://docs.rs/metrics/0.24/metrics/fn.with_local_recorder.html

use ::metrics::{counter, describe_counter, describe_gauge, gauge, Label, Unit};

use crate::limiter::{Limiter, Stats};
use crate::series::{self, Kind, FAMILIES};

/// Every metric name [`Limiter::record_metrics`] writes, as in the [table](self#names-and-labels).
pub const METRIC_NAMES: [&str; FAMILIES.len()] = {
    let mut names = [""; FAMILIES.len()];
    let mut i = 0;
    while i < FAMILIES.len() {
        names[i] = FAMILIES[i].name;
        i += 1;
    }
    names
};

impl Limiter {
    /// Writes the limiter's figures to the installed `metrics` recorder: the gauges and
    /// counters of the [`metrics`](crate::metrics) module.
    ///
    /// Call it before rendering a scrape, or from a periodic task; nothing else records
    /// anything. Without a recorder it does nothing but read [`Limiter::stats`].
    ///
    /// ```
    /// use tower_connlimit::{Config, Limiter};
    ///
    /// let limiter = Limiter::new(Config { max_conns_per_client: 1, ..Config::default() });
    /// let ip = "192.0.2.1".parse().unwrap();
    /// let _permit = limiter.try_acquire(ip).unwrap();
    /// assert!(limiter.try_acquire(ip).is_err());
    /// // With a recorder installed, this writes (among the others)
    /// // connlimit_rejected_total{point="direct",reason="client_connections"} 1
    /// limiter.record_metrics();
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn record_metrics(&self) {
        record(&self.stats());
    }
}

/// Writes every figure of `stats`.
fn record(stats: &Stats) {
    for sample in series::samples(stats) {
        let labels: Vec<Label> = sample
            .labels()
            .map(|(name, value)| Label::new(name, value))
            .collect();
        let name = sample.family.name;
        match sample.family.kind {
            Kind::Gauge => gauge!(name, labels).set(sample.value),
            Kind::Counter => counter!(name, labels).absolute(sample.value as u64),
        }
    }
}

/// Registers the help text and unit of every metric with the installed recorder.
///
/// Call it once, after installing the recorder (a recorder installed later does not see it);
/// the Prometheus exporter renders the texts as `# HELP` lines.
pub fn describe_metrics() {
    for family in FAMILIES {
        // Seconds are a unit; everything else is a count, which adds no suffix to the names.
        let unit = if family.name.ends_with("_seconds") {
            Unit::Seconds
        } else {
            Unit::Count
        };
        match family.kind {
            Kind::Gauge => describe_gauge!(family.name, unit, family.help),
            Kind::Counter => describe_counter!(family.name, unit, family.help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_in_the_docs_names_every_series() {
        let docs = include_str!("metrics.rs");
        for name in METRIC_NAMES {
            assert!(
                docs.contains(&format!("//! | `{name}` |")),
                "{name} is missing from the table in the module docs"
            );
        }
    }
}
