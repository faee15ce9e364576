//! The core `Limiter`: go-connlimit's cases, keys, limits, release, live config and errors.

use std::net::IpAddr;
use std::sync::Arc;

use tower_connlimit::{config::CidrLimit, Config, Limiter, RejectReason};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn limit(max_conns_per_client: usize) -> Limiter {
    Limiter::new(Config {
        max_conns_per_client,
        ..Config::default()
    })
}

#[test]
fn third_connection_is_refused_and_freeing_one_admits_another() {
    let limiter = limit(2);
    let client = ip("192.0.2.1");
    let first = limiter.try_acquire(client).unwrap();
    let _second = limiter.try_acquire(client).unwrap();
    let refused = limiter.try_acquire(client).unwrap_err();
    assert_eq!(refused.reason(), RejectReason::ClientConnections);
    assert_eq!(refused.to_string(), "too many requests");
    drop(first);
    let _third = limiter.try_acquire(client).unwrap();
    assert_eq!(limiter.open_connections(client), 2);
}

#[test]
fn raising_the_limit_live_admits_one_more() {
    let limiter = limit(2);
    let client = ip("192.0.2.1");
    let _held: Vec<_> = (0..2)
        .map(|_| limiter.try_acquire(client).unwrap())
        .collect();
    assert!(limiter.try_acquire(client).is_err());
    limiter
        .set_config(Config {
            max_conns_per_client: 3,
            ..Config::default()
        })
        .unwrap();
    let _third = limiter.try_acquire(client).unwrap();
    assert_eq!(limiter.open_connections(client), 3);
    assert_eq!(limiter.config().max_conns_per_client, 3);
    assert!(limiter.try_acquire(client).is_err());
}

#[test]
fn lowering_the_limit_keeps_open_connections() {
    let limiter = limit(3);
    let client = ip("192.0.2.1");
    let mut held: Vec<_> = (0..3)
        .map(|_| limiter.try_acquire(client).unwrap())
        .collect();
    limiter
        .set_config(Config {
            max_conns_per_client: 1,
            ..Config::default()
        })
        .unwrap();
    assert_eq!(limiter.open_connections(client), 3);
    assert!(limiter.try_acquire(client).is_err());
    held.truncate(1);
    assert!(
        limiter.try_acquire(client).is_err(),
        "still at the new limit of 1"
    );
    held.clear();
    assert!(limiter.try_acquire(client).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_tasks_over_a_hundred_clients_leave_exactly_500_refused() {
    let limiter = limit(5);
    let barrier = Arc::new(tokio::sync::Barrier::new(1000));
    let tasks: Vec<_> = (0..1000u32)
        .map(|i| {
            let limiter = limiter.clone();
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                let client = IpAddr::from([10, 0, (i % 100) as u8, 1]);
                let permit = limiter.try_acquire(client);
                // Hold every permit until all 1000 tasks have decided.
                barrier.wait().await;
                permit.is_ok()
            })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        admitted += usize::from(
            tokio::time::timeout(std::time::Duration::from_secs(30), task)
                .await
                .expect("task finished")
                .unwrap(),
        );
    }
    assert_eq!(admitted, 500);
    let stats = limiter.stats();
    assert_eq!(stats.rejected["client_connections"], 500);
    assert_eq!(stats.admitted_connections, 500);
    assert_eq!(stats.open_connections, 0);
    limiter.purge_expired();
    assert_eq!(
        limiter.stats().tracked_clients,
        0,
        "the map is empty once every permit is gone and a sweep ran"
    );
}

#[test]
fn clients_do_not_affect_each_other() {
    let limiter = limit(1);
    let _a = limiter.try_acquire(ip("192.0.2.1")).unwrap();
    assert!(limiter.try_acquire(ip("192.0.2.1")).is_err());
    let _b = limiter.try_acquire(ip("192.0.2.2")).unwrap();
    assert_eq!(limiter.stats().tracked_clients, 2);
}

#[test]
fn ipv4_mapped_ipv6_is_the_same_client_as_ipv4() {
    let limiter = limit(1);
    let _v4 = limiter.try_acquire(ip("192.0.2.1")).unwrap();
    assert!(limiter.try_acquire(ip("::ffff:192.0.2.1")).is_err());
    assert_eq!(limiter.open_connections(ip("::ffff:192.0.2.1")), 1);
}

#[test]
fn an_ipv6_slash_64_is_one_client_by_default() {
    let limiter = limit(2);
    let _a = limiter.try_acquire(ip("2001:db8:1:1::1")).unwrap();
    let _b = limiter
        .try_acquire(ip("2001:db8:1:1:dead:beef::2"))
        .unwrap();
    assert!(limiter.try_acquire(ip("2001:db8:1:1::3")).is_err());
    let _other_subnet = limiter.try_acquire(ip("2001:db8:1:2::1")).unwrap();

    let exact = Limiter::new(Config {
        max_conns_per_client: 1,
        ipv6_prefix: 128,
        ..Config::default()
    });
    let _a = exact.try_acquire(ip("2001:db8::1")).unwrap();
    let _b = exact.try_acquire(ip("2001:db8::2")).unwrap();
}

#[test]
fn ipv4_prefix_groups_a_subnet() {
    let limiter = Limiter::new(Config {
        max_conns_per_client: 2,
        ipv4_prefix: 24,
        ..Config::default()
    });
    let _a = limiter.try_acquire(ip("198.51.100.1")).unwrap();
    let _b = limiter.try_acquire(ip("198.51.100.200")).unwrap();
    assert!(limiter.try_acquire(ip("198.51.100.7")).is_err());
    assert_eq!(limiter.clients()[0].key.to_string(), "198.51.100.0/24");
}

#[test]
fn exempt_networks_are_counted_but_never_refused() {
    let limiter = Limiter::new(Config {
        max_conns_per_client: 1,
        max_conns_total: 2,
        exempt: vec!["10.0.0.0/8".parse().unwrap()],
        ..Config::default()
    });
    let held: Vec<_> = (0..5)
        .map(|_| limiter.try_acquire(ip("10.1.2.3")).unwrap())
        .collect();
    assert_eq!(limiter.open_connections(ip("10.1.2.3")), 5);
    assert_eq!(limiter.stats().open_connections, 5);
    // The exempt connections fill the global cap for everyone else.
    let refused = limiter.try_acquire(ip("192.0.2.1")).unwrap_err();
    assert_eq!(refused.reason(), RejectReason::TotalConnections);
    drop(held);
    assert!(limiter.try_acquire(ip("192.0.2.1")).is_ok());
}

#[test]
fn overrides_apply_with_the_longest_prefix_winning() {
    let limiter = Limiter::new(Config {
        max_conns_per_client: 1,
        overrides: vec![
            CidrLimit::new("10.0.0.0/8".parse().unwrap(), 3),
            CidrLimit::new("10.9.0.0/16".parse().unwrap(), 2),
            CidrLimit::new("192.0.2.0/24".parse().unwrap(), 0),
        ],
        ..Config::default()
    });
    let admitted = |addr: &str| {
        let held: Vec<_> = (0..10)
            .map_while(|_| limiter.try_acquire(ip(addr)).ok())
            .collect();
        held.len()
    };
    assert_eq!(admitted("10.1.1.1"), 3);
    assert_eq!(admitted("10.9.1.1"), 2);
    assert_eq!(admitted("203.0.113.1"), 1);
    assert_eq!(admitted("192.0.2.9"), 10, "an override of 0 is unlimited");
}

#[test]
fn the_global_cap_holds_across_clients() {
    let limiter = Limiter::new(Config {
        max_conns_per_client: 0,
        max_conns_total: 3,
        ..Config::default()
    });
    let held: Vec<_> = (1..=3u8)
        .map(|n| limiter.try_acquire(IpAddr::from([192, 0, 2, n])).unwrap())
        .collect();
    let refused = limiter.try_acquire(ip("192.0.2.9")).unwrap_err();
    assert_eq!(refused.reason(), RejectReason::TotalConnections);
    assert_eq!(refused.to_string(), "server busy");
    assert_eq!(limiter.stats().rejected["total_connections"], 1);
    assert_eq!(
        limiter.open_connections(ip("192.0.2.9")),
        0,
        "a refusal leaves no entry"
    );
    drop(held);
    assert!(limiter.try_acquire(ip("192.0.2.9")).is_ok());
}

#[test]
fn request_permits_are_counted_apart_from_connections() {
    let limiter = Limiter::new(Config {
        max_conns_per_client: 1,
        max_requests_per_client: 2,
        ..Config::default()
    });
    let client = ip("192.0.2.1");
    let conn = limiter.try_acquire(client).unwrap();
    let r1 = limiter.try_acquire_request(client).unwrap();
    let _r2 = limiter.try_acquire_request(client).unwrap();
    let refused = limiter.try_acquire_request(client).unwrap_err();
    assert_eq!(refused.reason(), RejectReason::ClientRequests);
    let details = limiter.client(client).unwrap();
    assert_eq!(
        (details.open_connections, details.in_flight_requests),
        (1, 2)
    );
    drop(conn);
    assert_eq!(
        limiter.stats().tracked_clients,
        1,
        "requests keep the entry alive"
    );
    drop(r1);
    assert_eq!(limiter.stats().in_flight_requests, 1);
}

#[test]
fn a_panic_releases_the_permit() {
    let limiter = limit(1);
    let client = ip("192.0.2.1");
    let inner = limiter.clone();
    let result = std::panic::catch_unwind(move || {
        let _permit = inner.try_acquire(client).unwrap();
        panic!("handler panicked while holding a permit");
    });
    assert!(result.is_err());
    assert_eq!(limiter.open_connections(client), 0);
    limiter.purge_expired();
    assert_eq!(limiter.stats().tracked_clients, 0);
}

#[tokio::test]
async fn a_cancelled_future_releases_the_permit() {
    let limiter = limit(1);
    let client = ip("192.0.2.1");
    let inner = limiter.clone();
    let (acquired_tx, acquired_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let _permit = inner.try_acquire(client).unwrap();
        acquired_tx.send(()).unwrap();
        std::future::pending::<()>().await;
    });
    acquired_rx.await.unwrap();
    assert_eq!(limiter.open_connections(client), 1);
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_eq!(limiter.open_connections(client), 0);
    limiter.purge_expired();
    assert_eq!(limiter.stats().tracked_clients, 0);
}

#[test]
fn a_prefix_change_releases_open_permits_under_their_old_key() {
    let limiter = limit(1);
    let permit = limiter.try_acquire(ip("2001:db8::1")).unwrap();
    limiter
        .set_config(Config {
            max_conns_per_client: 1,
            ipv6_prefix: 48,
            ..Config::default()
        })
        .unwrap();
    assert_eq!(permit.client_key().prefix_len(), 64);
    drop(permit);
    assert_eq!(limiter.stats().open_connections, 0);
    limiter.purge_expired();
    assert_eq!(limiter.stats().tracked_clients, 0);
}

#[test]
fn an_invalid_config_is_refused_and_the_old_one_stays() {
    let limiter = limit(7);
    let err = limiter
        .set_config(Config {
            ipv4_prefix: 40,
            ..Config::default()
        })
        .unwrap_err();
    assert_eq!(err.field(), "ipv4_prefix");
    assert_eq!(err.reason(), "must be at most 32, got 40");
    assert_eq!(limiter.config().max_conns_per_client, 7);

    let err = Limiter::try_new(Config {
        exempt: vec!["::1".parse().unwrap(), "::1".parse().unwrap()],
        ..Config::default()
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid config: exempt[1]: ::1/128 is already listed at exempt[0]"
    );

    let err = "10.0.0.1/8".parse::<tower_connlimit::Cidr>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "10.0.0.1/8 has host bits set; the network is 10.0.0.0/8"
    );
}

#[test]
#[should_panic(expected = "invalid config: ipv6_prefix: must be at most 128, got 200")]
fn new_panics_with_the_config_error() {
    let _ = Limiter::new(Config {
        ipv6_prefix: 200,
        ..Config::default()
    });
}

#[test]
fn an_exempt_host_does_not_use_up_its_neighbours_allowance() {
    let limiter = Limiter::new(Config {
        max_conns_per_client: 1,
        exempt: vec!["2001:db8::1".parse().unwrap()],
        ..Config::default()
    });
    let _exempt: Vec<_> = (0..5)
        .map(|_| limiter.try_acquire(ip("2001:db8::1")).unwrap())
        .collect();
    // Same /64, not exempt: its own allowance is untouched.
    let _neighbour = limiter.try_acquire(ip("2001:db8::2")).unwrap();
    assert!(limiter.try_acquire(ip("2001:db8::3")).is_err());
    assert_eq!(limiter.open_connections(ip("2001:db8::1")), 5);
    assert_eq!(limiter.open_connections(ip("2001:db8::2")), 1);
}

#[test]
fn refused_attempts_never_crowd_out_others_under_the_global_cap() {
    // One client hammers at its per-client limit while another connects and disconnects under
    // a global cap that has room for it. A refused attempt must not count towards the cap, even
    // for an instant, so the second client is never refused.
    let limiter = Limiter::new(Config {
        max_conns_per_client: 1,
        max_conns_total: 3,
        ..Config::default()
    });
    let _a = limiter.try_acquire(ip("192.0.2.1")).unwrap();
    let _c = limiter.try_acquire(ip("192.0.2.3")).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let refused_b = std::thread::scope(|scope| {
        let hammer = scope.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                assert!(limiter.try_acquire(ip("192.0.2.1")).is_err());
            }
        });
        let mut refused = 0;
        for _ in 0..200_000 {
            if std::time::Instant::now() > deadline {
                break;
            }
            match limiter.try_acquire(ip("192.0.2.2")) {
                Ok(permit) => drop(permit),
                Err(_) => refused += 1,
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        hammer.join().unwrap();
        refused
    });
    assert_eq!(refused_b, 0, "the legitimate client was refused");
    assert_eq!(limiter.stats().rejected["total_connections"], 0);
    assert!(
        limiter.stats().rejected["client_connections"] > 0,
        "the hammer ran"
    );
}

#[test]
fn a_banned_network_refuses_its_clients_tracked_or_new_until_lifted() {
    let limiter = Limiter::new(Config::default());
    let inside: std::net::IpAddr = "203.0.113.7".parse().unwrap();
    let newcomer: std::net::IpAddr = "203.0.113.200".parse().unwrap();
    let outside: std::net::IpAddr = "198.51.100.7".parse().unwrap();
    drop(limiter.try_acquire(inside).unwrap());
    let network = "203.0.113.0/24".parse().unwrap();
    limiter.ban_network(network, std::time::Duration::from_secs(600));
    for ip in [inside, newcomer] {
        assert_eq!(
            limiter.try_acquire(ip).unwrap_err().reason(),
            tower_connlimit::RejectReason::Banned,
            "{ip}"
        );
    }
    assert!(limiter.try_acquire(outside).is_ok());
    assert_eq!(limiter.banned_networks().len(), 1);
    assert!(limiter.unban_network(network));
    for ip in [inside, newcomer] {
        assert!(limiter.try_acquire(ip).is_ok(), "{ip}");
    }
    assert!(limiter.banned_networks().is_empty());
}
