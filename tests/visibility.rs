//! What an operator sees: stats per admission point after scripted traffic over loopback,
//! `top_clients`, `client`, and logs that stay few under a flood.
#![cfg(feature = "axum")]

mod support;

use std::io::Write;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::{routing::get, Router};
use tower_connlimit::{
    clock::FakeClock, stats::ByReason, Config, ConnLimitLayer, Limiter, RateLimit, RejectReason,
    Stats,
};

use support::{
    client_ip, connect_from, h1_get, http1_client, serve_behind_listener, wait_until, was_refused,
};

/// The counts that are not zero.
fn nonzero(counts: &ByReason) -> Vec<(&'static str, u64)> {
    counts.iter().filter(|(_, n)| *n > 0).collect()
}

/// The figures of the admission point `name`, which must be in use.
fn point<'a>(stats: &'a Stats, name: &str) -> &'a tower_connlimit::stats::PointStats {
    stats
        .point(name)
        .unwrap_or_else(|| panic!("no point {name}"))
}

#[tokio::test]
async fn stats_count_each_admission_point_exactly() {
    // Connections at the listener, requests at the layer, on one limiter.
    let limiter = Limiter::new(Config {
        max_conns_per_client: 2,
        request_rate: Some(RateLimit::new(2, Duration::from_secs(3600))),
        ..Config::default()
    });
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(ConnLimitLayer::with_limiter(limiter.clone()));
    let addr = serve_behind_listener(app, limiter.clone()).await;

    // 127.0.0.2: two connections admitted, a third refused at accept.
    let first = http1_client(connect_from(2, addr).await).await;
    let _second = http1_client(connect_from(2, addr).await).await;
    let mut refused = connect_from(2, addr).await;
    assert!(was_refused(&mut refused).await);
    // 127.0.0.3: one connection, three requests, the third over the request rate.
    let mut third = http1_client(connect_from(3, addr).await).await;
    let statuses = [
        h1_get(&mut third, "/").await.0,
        h1_get(&mut third, "/").await.0,
        h1_get(&mut third, "/").await.0,
    ];
    assert_eq!(statuses.map(|s| s.as_u16()), [200, 200, 429]);
    wait_until("every request is released", || {
        limiter.stats().in_flight_requests == 0
    })
    .await;

    let stats = limiter.stats();
    let listener = point(&stats, "listener");
    assert_eq!(listener.open_connections, 3);
    assert_eq!(listener.admitted, 3);
    assert_eq!(nonzero(&listener.rejected), [("client_connections", 1)]);
    let requests = point(&stats, "request_layer");
    assert_eq!(requests.in_flight_requests, 0);
    assert_eq!(requests.admitted, 2);
    assert_eq!(nonzero(&requests.rejected), [("request_rate", 1)]);
    // The layer can admit at both of its levels; only the request level saw traffic.
    for idle in ["make_service", "direct"] {
        let figures = point(&stats, idle);
        assert_eq!(
            (
                figures.open_connections,
                figures.in_flight_requests,
                figures.admitted
            ),
            (0, 0, 0),
            "{idle}"
        );
        assert_eq!(nonzero(&figures.rejected), [], "{idle}");
    }
    // Every reason of every point is listed, zeros included: the limiter's, then the point's.
    let mut reasons: Vec<&str> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
    reasons.push("no_client_address");
    if cfg!(feature = "proxy-protocol") {
        reasons.extend([
            "proxy_untrusted",
            "proxy_header_invalid",
            "proxy_header_timeout",
        ]);
    }
    let listed: Vec<&str> = listener.rejected.iter().map(|(name, _)| name).collect();
    assert_eq!(listed, reasons);
    // The totals are the points added up.
    assert_eq!(stats.open_connections, 3);
    assert_eq!(stats.admitted_connections, 3);
    assert_eq!(stats.admitted_requests, 2);
    assert_eq!(stats.rejected["client_connections"], 1);
    assert_eq!(stats.rejected["request_rate"], 1);
    assert_eq!(stats.rejected.total(), 2);
    assert_eq!(stats.tracked_clients, 2);

    // A direct call is counted apart from the points of the server.
    let direct = limiter.try_acquire(client_ip(9)).unwrap();
    assert_eq!(point(&limiter.stats(), "direct").open_connections, 1);
    drop(direct);
    let stats = limiter.stats();
    assert_eq!(point(&stats, "direct").open_connections, 0);
    assert_eq!(point(&stats, "direct").admitted, 1);

    // Closing a connection shows at its point.
    drop(first);
    wait_until("the closed connection is released", || {
        point(&limiter.stats(), "listener").open_connections == 2
    })
    .await;
}

#[test]
fn top_clients_ranks_by_open_connections_then_requests() {
    let limiter = Limiter::new(Config {
        max_conns_per_client: 0,
        ..Config::default()
    });
    let ip = |n: u8| IpAddr::from([192, 0, 2, n]);
    let mut held = Vec::new();
    for (n, connections) in [(1, 1), (2, 3), (3, 2), (4, 3), (5, 1)] {
        for _ in 0..connections {
            held.push(limiter.try_acquire(ip(n)).unwrap());
        }
    }
    // 192.0.2.4 has as many connections as 192.0.2.2, and a request in flight more.
    let request = limiter.try_acquire_request(ip(4)).unwrap();
    let top: Vec<(IpAddr, usize, usize)> = limiter
        .top_clients(3)
        .iter()
        .map(|c| (c.key.network(), c.open_connections, c.in_flight_requests))
        .collect();
    assert_eq!(top, [(ip(4), 3, 1), (ip(2), 3, 0), (ip(3), 2, 0)]);
    assert_eq!(limiter.top_clients(0), []);
    assert_eq!(limiter.top_clients(100).len(), 5);
    // Equal ranks are ordered by key.
    let tail: Vec<IpAddr> = limiter.top_clients(5)[3..]
        .iter()
        .map(|c| c.key.network())
        .collect();
    assert_eq!(tail, [ip(1), ip(5)]);
    drop((held, request));
    assert_eq!(
        limiter.top_clients(10),
        [],
        "clients with nothing open are left out"
    );
}

#[test]
fn client_details_show_counts_and_a_ban() {
    let clock = FakeClock::new();
    let limiter = Limiter::try_with_clock(Config::default(), clock.clone()).unwrap();
    let ip = IpAddr::from([192, 0, 2, 7]);
    assert_eq!(limiter.client(ip), None);
    let _connection = limiter.try_acquire(ip).unwrap();
    let _request = limiter.try_acquire_request(ip).unwrap();
    let details = limiter.client(ip).unwrap();
    assert_eq!(
        (details.open_connections, details.in_flight_requests),
        (1, 1)
    );
    assert_eq!(details.banned_for, None);

    limiter.ban(ip, Duration::from_secs(60));
    clock.advance(Duration::from_secs(15));
    let details = limiter.client(ip).unwrap();
    assert_eq!(details.banned_for, Some(Duration::from_secs(45)));
    assert_eq!(details.remembered_for, Some(Duration::from_secs(45)));
}

/// A `tracing` writer that keeps every line, for counting.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Lines {
    fn take(&self) -> Vec<String> {
        let bytes = std::mem::take(&mut *self.0.lock().unwrap());
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture(level: tracing::Level) -> (Lines, impl tracing::Subscriber) {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (lines, subscriber)
}

/// The number in `line` after `field=`.
fn field(line: &str, field: &str) -> u64 {
    let start = line.find(&format!("{field}=")).unwrap() + field.len() + 1;
    line[start..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_flood_of_ten_thousand_refusals_logs_a_few_lines() {
    let clock = FakeClock::new();
    let limiter = Limiter::try_with_clock(
        Config {
            max_conns_per_client: 1,
            ..Config::default()
        },
        clock.clone(),
    )
    .unwrap();
    let (lines, subscriber) = capture(tracing::Level::INFO);
    tracing::subscriber::with_default(subscriber, || {
        // Other tests' threads may have cached "nobody listens" for these callsites.
        tracing::callsite::rebuild_interest_cache();
        // 100 clients each hold their one connection, then are refused 100 times each, over
        // 25 s, while an honest client connects after every tenth refusal.
        let held: Vec<_> = (0..100u8)
            .map(|n| {
                limiter
                    .try_acquire(IpAddr::from([198, 51, 100, n]))
                    .unwrap()
            })
            .collect();
        let honest = IpAddr::from([203, 0, 113, 1]);
        for i in 0..10_000u32 {
            let client = IpAddr::from([198, 51, 100, (i % 100) as u8]);
            assert!(limiter.try_acquire(client).is_err());
            if i % 10 == 0 {
                drop(limiter.try_acquire(honest).unwrap());
            }
            clock.advance(Duration::from_micros(2_500));
        }
        // A quiet spell, then honest traffic: one of the first decisions (one in 32 on a
        // thread looks at the clock) closes the last window.
        clock.advance(Duration::from_secs(10));
        drop(held);
        for _ in 0..32 {
            drop(limiter.try_acquire(honest).unwrap());
        }
    });
    let lines = lines.take();
    assert_eq!(lines.len(), 4, "{lines:#?}");
    let opening = &lines[0];
    assert!(
        opening.contains("WARN") && opening.contains("refusing"),
        "{opening}"
    );
    for wanted in ["client=198.51.100.0", "client_connections", "point=direct"] {
        assert!(opening.contains(wanted), "{wanted} in {opening}");
    }
    let summaries = &lines[1..];
    let refused: u64 = summaries.iter().map(|line| field(line, "refused")).sum();
    assert_eq!(
        refused, 9_999,
        "every refusal after the first is in exactly one summary"
    );
    for line in summaries {
        assert!(line.contains("WARN") && line.contains("more connections or requests refused"));
        // The distinct-client count is an estimate, within a few percent.
        assert!((95..=105).contains(&field(line, "clients")), "{line}");
        assert!((10..=20).contains(&field(line, "seconds")), "{line}");
    }
    assert_eq!(limiter.stats().rejected["client_connections"], 10_000);
}

#[test]
fn refusals_log_their_reason_and_client_at_debug_and_admissions_at_trace() {
    let limiter = Limiter::new(Config {
        max_conns_per_client: 1,
        ..Config::default()
    });
    let (lines, subscriber) = capture(tracing::Level::TRACE);
    tracing::subscriber::with_default(subscriber, || {
        // Other tests' threads may have cached "nobody listens" for these callsites.
        tracing::callsite::rebuild_interest_cache();
        let ip = IpAddr::from([192, 0, 2, 55]);
        let _held = limiter.try_acquire(ip).unwrap();
        limiter.try_acquire(ip).unwrap_err();
    });
    let lines = lines.take();
    let admitted: Vec<_> = lines.iter().filter(|l| l.contains("admitted")).collect();
    let refused: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("DEBUG") && l.contains("refused"))
        .collect();
    assert_eq!(admitted.len(), 1, "{lines:#?}");
    assert!(admitted[0].contains("TRACE") && admitted[0].contains("client=192.0.2.55"));
    assert_eq!(refused.len(), 1, "{lines:#?}");
    for wanted in ["client=192.0.2.55", "client_connections", "point=direct"] {
        assert!(refused[0].contains(wanted), "{wanted} in {}", refused[0]);
    }
}

#[tokio::test]
async fn a_missing_client_address_is_logged_loudly_once_then_at_debug() {
    use tower::{service_fn, Layer, ServiceExt};

    let limiter = Limiter::new(Config::default());
    let service = ConnLimitLayer::with_limiter(limiter.clone()).layer(service_fn(
        |_request: http::Request<String>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
        },
    ));
    let (lines, subscriber) = capture(tracing::Level::DEBUG);
    let _logging = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
    for _ in 0..3 {
        // No ConnectInfo, ClientAddr or SocketAddr: the server is misconfigured.
        let response = service
            .clone()
            .oneshot(http::Request::new(String::new()))
            .await
            .unwrap();
        assert_eq!(response.status(), 500);
    }
    let lines = lines.take();
    let about = |level: &str| {
        lines
            .iter()
            .filter(|l| l.contains(level) && l.contains("cannot tell who the client is"))
            .count()
    };
    assert_eq!((about("ERROR"), about("DEBUG")), (1, 2), "{lines:#?}");
    let stats = limiter.stats();
    assert_eq!(
        stats.point("request_layer").unwrap().rejected["no_client_address"],
        3
    );
}
