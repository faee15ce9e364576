//! The `metrics` feature: exact series after scripted traffic, at the direct point and through a
//! real listener, never a client address as a label, and the documented names in Prometheus text.
#![cfg(feature = "metrics")]

mod support;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::MetricKind;
use tokio::net::TcpListener;
use tower_connlimit::metrics::{describe_metrics, METRIC_NAMES};
use tower_connlimit::{
    clock::FakeClock, Config, ConnLimitLayer, ConnLimitListener, Limiter, RateLimit, RejectReason,
};

use support::*;

/// A series: its name and its labels, sorted by label name.
type Series = (String, Vec<(String, String)>);

/// Everything `limiter.record_metrics()` writes, captured by a recorder of its own.
struct Recorded(HashMap<Series, (MetricKind, DebugValue)>);

fn record(limiter: &Limiter) -> Recorded {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || limiter.record_metrics());
    let mut series = HashMap::new();
    for (key, _unit, _description, value) in snapshotter.snapshot().into_vec() {
        let (kind, key) = key.into_parts();
        let mut labels: Vec<(String, String)> = key
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        labels.sort();
        let previous = series.insert((key.name().to_owned(), labels), (kind, value));
        assert!(previous.is_none(), "a series was written twice");
    }
    Recorded(series)
}

impl Recorded {
    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<&(MetricKind, DebugValue)> {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.sort();
        self.0.get(&(name.to_owned(), labels))
    }

    fn get(&self, name: &str, labels: &[(&str, &str)]) -> &(MetricKind, DebugValue) {
        self.find(name, labels)
            .unwrap_or_else(|| panic!("no series {name} {labels:?}"))
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.get(name, labels) {
            (MetricKind::Counter, DebugValue::Counter(n)) => *n,
            other => panic!("{name} {labels:?} is not a counter: {other:?}"),
        }
    }

    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.get(name, labels) {
            (MetricKind::Gauge, DebugValue::Gauge(v)) => v.0,
            other => panic!("{name} {labels:?} is not a gauge: {other:?}"),
        }
    }

    fn open(&self, point: &str) -> f64 {
        self.gauge("connlimit_open_connections", &[("point", point)])
    }

    fn in_flight(&self, point: &str) -> f64 {
        self.gauge("connlimit_in_flight_requests", &[("point", point)])
    }

    fn admitted(&self, point: &str) -> u64 {
        self.counter("connlimit_admitted_total", &[("point", point)])
    }

    fn rejected(&self, point: &str, reason: &str) -> u64 {
        self.counter(
            "connlimit_rejected_total",
            &[("point", point), ("reason", reason)],
        )
    }

    /// The sum of every `connlimit_rejected_total` series.
    fn rejected_everywhere(&self) -> u64 {
        self.0
            .iter()
            .filter(|((name, _), _)| name == "connlimit_rejected_total")
            .map(|(_, value)| match value {
                (_, DebugValue::Counter(n)) => *n,
                other => panic!("a rejected series is not a counter: {other:?}"),
            })
            .sum()
    }

    /// Fails if any label is not one of the documented ones, or if any label value is an IP
    /// address (or prefix-masked client key).
    fn assert_no_client_labels(&self) {
        for (name, labels) in self.0.keys() {
            for (key, value) in labels {
                assert!(
                    ["point", "reason"].contains(&key.as_str()),
                    "undocumented label {key:?} on {name}"
                );
                let address = value.split('/').next().unwrap_or(value);
                assert!(
                    address.parse::<IpAddr>().is_err(),
                    "{name} has a client address as a label: {key}={value}"
                );
            }
        }
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// How many series `record_metrics` writes for `limiter`: for each point in use, its open
/// connections and in-flight requests (as it counts them), admissions, refusals by reason and
/// early closes by reason; then tracked clients, dry runs, bans and evictions.
fn series_per_record(limiter: &Limiter) -> usize {
    let per_point: usize = limiter
        .stats()
        .points
        .iter()
        .map(|p| {
            // `direct` counts both; the request layer requests only; the others connections.
            let kinds = match p.name {
                "direct" => 2,
                _ => 1,
            };
            kinds + 1 + p.rejected.iter().count() + p.closed.iter().count()
        })
        .sum();
    // Tracked clients, dry runs, bans, evictions and unidentified requests; no fleet here.
    // With fair share on, each budget's level and clients over it, and the reclaims asked.
    let fair = limiter.stats().fair_share.map_or(0, |fair| {
        let budgets = [fair.connections.budget, fair.requests.budget];
        2 * budgets.iter().filter(|&&budget| budget != 0).count() + 1
    });
    per_point + 5 + fair
}

#[test]
fn direct_traffic_is_recorded_exactly() {
    let limiter = Limiter::try_with_clock(
        Config {
            max_conns_per_client: 2,
            max_requests_per_client: 1,
            // One connection a minute, in dry run: later ones are counted, not refused.
            connect_rate: Some(RateLimit::new(1, Duration::from_secs(60)).dry_run()),
            ..Config::default()
        },
        FakeClock::new(),
    )
    .unwrap();
    let (one, two, three) = (ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.3"));

    let first = limiter.try_acquire(one).expect("first connection");
    let second = limiter
        .try_acquire(one)
        .expect("second connection (dry-run rate)");
    let refused = limiter.try_acquire(one).expect_err("third connection");
    assert_eq!(refused.reason(), RejectReason::ClientConnections);
    let request = limiter.try_acquire_request(one).expect("first request");
    let refused = limiter
        .try_acquire_request(one)
        .expect_err("second request");
    assert_eq!(refused.reason(), RejectReason::ClientRequests);
    drop(limiter.try_acquire(two).expect("another client"));
    limiter.ban(three, Duration::from_secs(60));
    let refused = limiter.try_acquire(three).expect_err("banned connection");
    assert_eq!(refused.reason(), RejectReason::Banned);
    let refused = limiter
        .try_acquire_request(three)
        .expect_err("banned request");
    assert_eq!(refused.reason(), RejectReason::Banned);

    let m = record(&limiter);
    m.assert_no_client_labels();
    assert_eq!(
        m.0.len(),
        series_per_record(&limiter),
        "every series, zeros included"
    );
    // Only the point in use: direct, with the limiter's ten reasons.
    assert_eq!(m.0.len(), 18);

    // Two connections and a request of 192.0.2.1, a connection of 192.0.2.2.
    assert_eq!(m.admitted("direct"), 4);
    assert_eq!(m.rejected("direct", "client_connections"), 1);
    assert_eq!(m.rejected("direct", "client_requests"), 1);
    assert_eq!(m.rejected("direct", "banned"), 2);
    assert_eq!(m.rejected_everywhere(), 4, "no other refusal anywhere");
    for point in ["listener", "make_service", "request_layer"] {
        let admitted = m.find("connlimit_admitted_total", &[("point", point)]);
        assert!(
            admitted.is_none(),
            "no series for {point}, which is not in use"
        );
    }
    assert_eq!(m.rejected("direct", "total_connections"), 0);
    let proxy = [("point", "direct"), ("reason", "proxy_header_timeout")];
    assert!(
        m.find("connlimit_rejected_total", &proxy).is_none(),
        "direct refuses for the limiter's reasons only"
    );

    assert_eq!(m.open("direct"), 2.0);
    assert_eq!(m.in_flight("direct"), 1.0);
    // 192.0.2.1 holds permits, 192.0.2.2 has rate state, 192.0.2.3 is banned.
    assert_eq!(m.gauge("connlimit_tracked_clients", &[]), 3.0);

    // The second and third connections of 192.0.2.1 were over the dry-run rate.
    assert_eq!(m.counter("connlimit_dry_run_total", &[]), 2);
    assert_eq!(m.counter("connlimit_bans_total", &[]), 1);
    assert_eq!(m.counter("connlimit_evictions_total", &[]), 0);

    // Gauges follow the limiter; counters keep counting from where they were.
    drop((first, second, request));
    let m = record(&limiter);
    assert_eq!(m.open("direct"), 0.0);
    assert_eq!(m.in_flight("direct"), 0.0);
    assert_eq!(m.admitted("direct"), 4);
    assert_eq!(m.rejected_everywhere(), 4);
}

#[tokio::test]
async fn listener_traffic_is_recorded_under_point_listener() {
    let limiter = Limiter::new(Config {
        max_conns_per_client: 2,
        ..Config::default()
    });
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut listener = ConnLimitListener::new(tcp, limiter.clone());
    let addr = listener.local_addr().unwrap();
    let (admitted_tx, mut admitted) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        while let Ok((io, _peer)) = listener.accept().await {
            if admitted_tx.send(io).is_err() {
                break;
            }
        }
    });

    let clients = [connect_from(2, addr).await, connect_from(2, addr).await];
    let held = [
        bounded(admitted.recv()).await.unwrap(),
        bounded(admitted.recv()).await.unwrap(),
    ];
    let mut third = connect_from(2, addr).await;
    assert!(was_refused(&mut third).await, "the third connection");
    wait_until("the refusal is counted", || {
        let stats = limiter.stats();
        stats.point("listener").unwrap().rejected["client_connections"] == 1
    })
    .await;

    let m = record(&limiter);
    m.assert_no_client_labels();
    assert_eq!(m.admitted("listener"), 2);
    assert_eq!(m.rejected("listener", "client_connections"), 1);
    assert_eq!(m.rejected_everywhere(), 1);
    assert_eq!(m.admitted("direct"), 0);
    assert_eq!(m.open("listener"), 2.0);
    assert_eq!(m.open("direct"), 0.0);
    assert_eq!(m.gauge("connlimit_tracked_clients", &[]), 1.0);
    for deadline in ["handshake_timeout", "idle_timeout", "min_receive_rate"] {
        let labels = [("point", "listener"), ("reason", deadline)];
        assert_eq!(m.counter("connlimit_closed_total", &labels), 0);
    }

    drop(held);
    drop(clients);
    wait_until("the connections are released", || {
        limiter.stats().open_connections == 0
    })
    .await;
    let m = record(&limiter);
    assert_eq!(m.open("listener"), 0.0);
    assert_eq!(m.admitted("listener"), 2);
    server.abort();
}

#[tokio::test]
async fn prometheus_text_has_every_documented_name() {
    let limiter = Limiter::new(Config {
        max_conns_per_client: 1,
        // Budgets shared fairly, so that fair share's series are written too.
        max_conns_total: 100,
        max_requests_total: 100,
        fair_share: tower_connlimit::config::FairShare {
            enabled: true,
            ceiling: 1,
            ..Default::default()
        },
        ..Config::default()
    });
    // Every point of this crate in use, so that every name has series.
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let _listener = ConnLimitListener::new(tcp, limiter.clone());
    let _layer = ConnLimitLayer::with_limiter(limiter.clone());
    let client = ip("2001:db8::1");
    let _permit = limiter.try_acquire(client).unwrap();
    assert!(limiter.try_acquire(client).is_err());

    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        describe_metrics();
        limiter.record_metrics();
    });
    let text = handle.render();

    // The fleet's series are written only with a fleet joined (tests/fleet.rs).
    for name in METRIC_NAMES
        .iter()
        .filter(|n| !n.starts_with("connlimit_fleet_"))
    {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        assert!(
            text.contains(&format!("\n# TYPE {name} {kind}\n"))
                || text.starts_with(&format!("# TYPE {name} {kind}\n")),
            "no {kind} {name} in\n{text}"
        );
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no help for {name} in\n{text}"
        );
    }
    // Counters keep their names as given: the exporter adds no second `_total`.
    let lines: Vec<&str> = text.lines().collect();
    for expected in [
        r#"connlimit_rejected_total{point="direct",reason="client_connections"} 1"#,
        r#"connlimit_rejected_total{point="listener",reason="banned"} 0"#,
        r#"connlimit_admitted_total{point="direct"} 1"#,
        r#"connlimit_open_connections{point="direct"} 1"#,
        r#"connlimit_in_flight_requests{point="request_layer"} 0"#,
        r#"connlimit_closed_total{point="listener",reason="min_receive_rate"} 0"#,
        "connlimit_tracked_clients 1",
        "connlimit_bans_total 0",
    ] {
        assert!(lines.contains(&expected), "no line {expected:?} in\n{text}");
    }
    // Every sample is one of the documented names, and no client address appears anywhere.
    let samples: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(samples.len(), series_per_record(&limiter));
    for sample in samples {
        let name = sample.split(['{', ' ']).next().unwrap();
        assert!(METRIC_NAMES.contains(&name), "undocumented sample {sample}");
    }
    assert!(!text.contains("2001:db8"), "a client address in\n{text}");
}

#[test]
fn every_name_is_in_the_module_docs_table() {
    let source = include_str!("../src/metrics.rs");
    let rows: Vec<&str> = source
        .lines()
        .filter(|l| l.starts_with("//! | `connlimit_"))
        .collect();
    assert_eq!(rows.len(), METRIC_NAMES.len(), "one table row per name");
    for name in METRIC_NAMES {
        assert!(
            rows.iter()
                .any(|row| row.starts_with(&format!("//! | `{name}` |"))),
            "{name} is not documented"
        );
    }
}
