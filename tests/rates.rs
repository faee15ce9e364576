//! Connect and request rates in the `Limiter`, on a fake clock: nothing here sleeps.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use tower_connlimit::{clock::FakeClock, rate::Strategy, Config, Limiter, RateLimit, RejectReason};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn with_rates(config: Config) -> (Limiter, FakeClock) {
    let clock = FakeClock::new();
    let limiter = Limiter::try_with_clock(config, clock.clone()).unwrap();
    (limiter, clock)
}

fn one_connect_per_second() -> Config {
    Config {
        connect_rate: Some(RateLimit::new(1, Duration::from_secs(1)).strategy(Strategy::Cooldown)),
        ..Config::default()
    }
}

#[test]
fn the_connect_rate_refuses_with_a_retry_time_then_admits() {
    let (limiter, clock) = with_rates(one_connect_per_second());
    let _first = limiter.try_acquire(ip("192.0.2.1")).unwrap();
    clock.advance(Duration::from_millis(400));
    let refused = limiter.try_acquire(ip("192.0.2.1")).unwrap_err();
    assert_eq!(refused.reason(), RejectReason::ConnectRate);
    assert_eq!(refused.retry_after(), Some(Duration::from_millis(600)));
    assert_eq!(refused.to_string(), "come back later");
    // Another client has its own rate.
    let _other = limiter.try_acquire(ip("192.0.2.2")).unwrap();
    clock.advance(Duration::from_millis(600));
    let _second = limiter.try_acquire(ip("192.0.2.1")).unwrap();
    assert_eq!(limiter.stats().rejected["connect_rate"], 1);
}

#[test]
fn the_rate_is_checked_before_the_concurrency_limit() {
    let (limiter, _clock) = with_rates(Config {
        max_conns_per_client: 1,
        ..one_connect_per_second()
    });
    let _held = limiter.try_acquire(ip("192.0.2.1")).unwrap();
    let refused = limiter.try_acquire(ip("192.0.2.1")).unwrap_err();
    assert_eq!(refused.reason(), RejectReason::ConnectRate);
    assert_eq!(limiter.stats().rejected["client_connections"], 0);
}

#[test]
fn disconnecting_does_not_reset_a_clients_rate() {
    let (limiter, clock) = with_rates(one_connect_per_second());
    drop(limiter.try_acquire(ip("192.0.2.1")).unwrap());
    assert_eq!(
        limiter.stats().tracked_clients,
        1,
        "kept for its rate state"
    );
    assert_eq!(limiter.open_connections(ip("192.0.2.1")), 0);
    assert!(limiter.try_acquire(ip("192.0.2.1")).is_err());

    clock.advance(Duration::from_secs(1));
    limiter.purge_expired();
    assert_eq!(
        limiter.stats().tracked_clients,
        0,
        "forgotten once the rate state expired"
    );
    assert!(limiter.try_acquire(ip("192.0.2.1")).is_ok());
}

#[test]
fn a_returning_client_releases_without_leaking_its_entry() {
    let (limiter, clock) = with_rates(one_connect_per_second());
    let permit = limiter.try_acquire(ip("192.0.2.1")).unwrap();
    clock.advance(Duration::from_secs(5));
    // The rate state expired while the connection was open: once released, nothing keeps the
    // client.
    drop(permit);
    assert!(limiter.client(ip("192.0.2.1")).is_none());
    limiter.purge_expired();
    assert_eq!(limiter.stats().tracked_clients, 0);
}

#[test]
fn many_one_off_clients_are_swept_after_expiry() {
    let (limiter, clock) = with_rates(one_connect_per_second());
    for i in 0..200_000u32 {
        drop(
            limiter
                .try_acquire(IpAddr::from((0x0a00_0000 + i).to_be_bytes()))
                .unwrap(),
        );
    }
    assert_eq!(limiter.stats().tracked_clients, 200_000);
    assert_eq!(limiter.stats().open_connections, 0);
    clock.advance(Duration::from_secs(2));
    let _late = limiter.try_acquire(ip("192.0.2.1")).unwrap();
    // The sweeper forgets the expired, drained entries within about a second, on its own.
    let deadline = Instant::now() + Duration::from_secs(10);
    while limiter.stats().tracked_clients > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        limiter.stats().tracked_clients,
        1,
        "only the client still connected"
    );
}

#[test]
fn removing_the_rates_live_still_forgets_retained_clients() {
    let (limiter, clock) = with_rates(one_connect_per_second());
    drop(limiter.try_acquire(ip("192.0.2.1")).unwrap());
    limiter.set_config(Config::default()).unwrap();
    assert!(
        limiter.try_acquire(ip("192.0.2.1")).is_ok(),
        "no rate any more"
    );
    assert!(
        limiter.client(ip("192.0.2.1")).is_some(),
        "its record is kept"
    );
    clock.advance(Duration::from_secs(2));
    assert!(
        limiter.client(ip("192.0.2.1")).is_none(),
        "until it expires"
    );
    limiter.purge_expired();
    assert_eq!(limiter.stats().tracked_clients, 0);
}

#[test]
fn the_request_rate_counts_requests_apart_from_connections() {
    let (limiter, clock) = with_rates(Config {
        request_rate: Some(RateLimit::new(2, Duration::from_secs(10))),
        ..Config::default()
    });
    let client = ip("2001:db8::1");
    let _conn = limiter.try_acquire(client).unwrap();
    drop(limiter.try_acquire_request(client).unwrap());
    drop(limiter.try_acquire_request(ip("2001:db8::2")).unwrap()); // same /64
    let refused = limiter.try_acquire_request(client).unwrap_err();
    assert_eq!(refused.reason(), RejectReason::RequestRate);
    // At 10 s the sliding estimate is 2 × (1 − 0) + 0 = 2, not below 2: one nanosecond later it is.
    assert_eq!(
        refused.retry_after(),
        Some(Duration::from_secs(10) + Duration::from_nanos(1))
    );
    assert!(
        limiter.try_acquire(client).is_ok(),
        "connections are not request-rated"
    );
    clock.advance(Duration::from_secs(20));
    assert!(limiter.try_acquire_request(client).is_ok());
}

#[test]
fn exempt_clients_have_no_rate() {
    let (limiter, _clock) = with_rates(Config {
        exempt: vec!["10.0.0.0/8".parse().unwrap()],
        ..one_connect_per_second()
    });
    let held: Vec<_> = (0..10)
        .map(|_| limiter.try_acquire(ip("10.0.0.1")).unwrap())
        .collect();
    assert_eq!(held.len(), 10);
}

#[test]
fn invalid_rate_rules_are_refused_by_field() {
    let err = Limiter::try_new(Config {
        request_rate: Some(RateLimit::new(0, Duration::from_secs(1))),
        ..Config::default()
    })
    .unwrap_err();
    assert_eq!(err.field(), "request_rate.events");
}

mod support;

#[tokio::test]
async fn the_listener_refuses_a_connect_flood_at_accept() {
    use tokio::io::AsyncWriteExt;
    let (limiter, clock) = with_rates(one_connect_per_second());
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut listener = tower_connlimit::ConnLimitListener::new(tcp, limiter.clone());
    let server = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut io, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = io.write_all(b"hi").await;
                let _ = tokio::io::AsyncReadExt::read(&mut io, &mut [0u8; 1]).await;
            });
        }
    });
    let mut first = support::connect_from(40, server).await;
    assert!(!support::was_refused(&mut first).await);
    for _ in 0..5 {
        let mut flood = support::connect_from(40, server).await;
        assert!(support::was_refused(&mut flood).await);
    }
    let mut other = support::connect_from(41, server).await;
    assert!(
        !support::was_refused(&mut other).await,
        "other clients are unaffected"
    );
    assert_eq!(limiter.stats().rejected["connect_rate"], 5);

    clock.advance(Duration::from_secs(1));
    let mut later = support::connect_from(40, server).await;
    assert!(!support::was_refused(&mut later).await);
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn a_request_over_the_rate_gets_429_with_retry_after() {
    use axum::routing::get;
    use tower_connlimit::ConnLimitLayer;

    let (limiter, clock) = with_rates(Config {
        request_rate: Some(
            RateLimit::new(1, Duration::from_millis(2500)).strategy(Strategy::FixedWindow),
        ),
        ..Config::default()
    });
    let app = axum::Router::new()
        .route("/", get(|| async { "hello" }))
        .layer(ConnLimitLayer::with_limiter(limiter.clone()));
    let server = support::serve_with_connect_info(app).await;
    let mut client = support::http1_client(support::connect_from(42, server).await).await;
    assert_eq!(support::h1_get(&mut client, "/").await.0, 200);
    clock.advance(Duration::from_millis(1000));
    let (status, headers, body) = support::h1_get(&mut client, "/").await;
    assert_eq!(status, 429);
    // 1.5 s left in the window, told as the next coarse step.
    assert_eq!(headers["retry-after"], "2");
    assert_eq!(body, "come back later");
    assert!(
        headers.get("connection").is_none(),
        "the connection stays open"
    );
    clock.advance(Duration::from_millis(1500));
    assert_eq!(support::h1_get(&mut client, "/").await.0, 200);
}

/// The most events a greedy client gets admitted in any window of `period`, trying
/// `tries_per_tick` times at each of 1,000 ticks per period for `periods` periods, after
/// staying quiet until `quiet_ticks` (a burst at a window's end when that is just before an
/// edge). Windows are aligned to the clock's origin, as the limiter's are.
fn worst_window(rule: RateLimit, quiet_ticks: u64) -> usize {
    const TICKS: u64 = 1000;
    let (limiter, clock) = with_rates(Config {
        request_rate: Some(rule),
        ..Config::default()
    });
    let tick = rule.period / TICKS as u32;
    let tries_per_tick = 3 * rule.events as usize;
    let mut admitted_at = Vec::new();
    clock.advance(tick * quiet_ticks as u32);
    for t in quiet_ticks..quiet_ticks + 4 * TICKS {
        for _ in 0..tries_per_tick {
            match limiter.try_acquire_request(ip("192.0.2.1")) {
                Ok(_permit) => admitted_at.push(t),
                Err(_) => break,
            }
        }
        clock.advance(tick);
    }
    // The most admissions with times in [t, t + TICKS), over every t at which one was made.
    let mut worst = 0;
    let mut start = 0;
    for end in 0..admitted_at.len() {
        while admitted_at[end] - admitted_at[start] >= TICKS {
            start += 1;
        }
        worst = worst.max(end + 1 - start);
    }
    worst
}

#[test]
fn each_strategys_worst_window_under_bursts_at_window_edges() {
    let events = 20;
    let rule = |strategy| RateLimit::new(events, Duration::from_secs(10)).strategy(strategy);
    let worst = |rule| {
        // Greedy from the start, and quiet until the last tick before the first window's edge.
        worst_window(rule, 0).max(worst_window(rule, 999))
    };
    let events = events as usize;
    let cooldown = worst(rule(Strategy::Cooldown));
    let fixed = worst(rule(Strategy::FixedWindow));
    let sliding = worst(rule(Strategy::SlidingWindow));
    let bucket = worst(rule(Strategy::TokenBucket));
    let bucket_of_5 = worst(rule(Strategy::TokenBucket).burst(5));
    let bucket_of_1 = worst(rule(Strategy::TokenBucket).burst(1));
    eprintln!(
        "worst window of 20 per 10 s: cooldown {cooldown}, fixed {fixed}, sliding {sliding}, \
         token bucket {bucket} (burst 5: {bucket_of_5}, burst 1: {bucket_of_1})"
    );
    assert_eq!(cooldown, events);
    assert_eq!(fixed, 2 * events);
    // The two-window estimate: a burst at a window's end, then the next window's estimate
    // discounts it while it is still inside the sliding window.
    assert_eq!(sliding, 2 * events);
    // The token bucket: `burst + events - 1` in any window, exactly.
    assert_eq!(bucket, 2 * events - 1);
    assert_eq!(bucket_of_5, 5 + events - 1);
    assert_eq!(bucket_of_1, events);
}
