//! Limiters on three "nodes" sharing bans and rates through a real `redis-server`, started by
//! the tests on a free loopback port (`scripts/test.sh` installs it): bans spread, a client
//! round robin over the nodes is held to the fleet's rate within the documented bound, Redis
//! killed and restarted, and a Redis that accepts connections but never answers.
#![cfg(feature = "redis")]

#[path = "support/redis.rs"]
mod redis_server;

use std::net::{IpAddr, TcpListener};
use std::time::{Duration, Instant};

use redis_server::Redis;

use tower_connlimit::fleet::{Fleet, FleetConfig};
use tower_connlimit::{ban::BanPolicy, Config, Limiter, RateLimit, RejectReason};

const INTERVAL: Duration = Duration::from_millis(100);
/// How long a test waits for the fleet, at most.
const WAIT: Duration = Duration::from_secs(10);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Three limiters with `config`, each in the fleet at `url` under a prefix of its own test.
fn nodes(url: &str, prefix: &str, config: Config) -> Vec<(Limiter, Fleet)> {
    ["a", "b", "c"]
        .into_iter()
        .map(|node| {
            let limiter = Limiter::new(config.clone());
            let mut fleet = FleetConfig::new(url, node);
            fleet.prefix = prefix.to_owned();
            fleet.sync_interval = INTERVAL;
            let joined = Fleet::join(&limiter, fleet).unwrap();
            (limiter, joined)
        })
        .collect()
}

/// Waits until `done`, at most `within`; how long it took.
async fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

async fn all_connected(nodes: &[(Limiter, Fleet)]) {
    wait_for("every node connected", WAIT, || {
        nodes.iter().all(|(_, fleet)| fleet.status().syncs > 0)
    })
    .await;
    for (limiter, _) in nodes {
        let health = limiter.stats().fleet.expect("in a fleet");
        assert!(
            health.connected && health.last_sync_age.is_some(),
            "{health:?}"
        );
    }
}

fn banned(limiter: &Limiter, client: IpAddr) -> bool {
    matches!(limiter.try_acquire(client), Err(r) if r.reason() == RejectReason::Banned)
}

#[tokio::test]
async fn a_ban_and_its_lifting_reach_every_node() {
    let redis = Redis::start();
    let nodes = nodes(&redis.url(), "bans", Config::default());
    all_connected(&nodes).await;
    let (bad, good) = (ip("203.0.113.66"), ip("203.0.113.7"));
    nodes[0].0.ban(bad, Duration::from_secs(600));
    let took = wait_for(
        "the ban reaches B and C",
        Duration::from_millis(1500),
        || nodes[1..].iter().all(|(limiter, _)| banned(limiter, bad)),
    )
    .await;
    println!("a manual ban reached the other nodes in {took:?}");
    for (limiter, _) in &nodes {
        assert!(
            limiter.try_acquire(good).is_ok(),
            "another client is served"
        );
    }
    // Lifted on B: lifted everywhere.
    assert!(nodes[1].0.unban(bad));
    wait_for(
        "the lift reaches A and C",
        Duration::from_millis(1500),
        || {
            [&nodes[0], &nodes[2]]
                .iter()
                .all(|(limiter, _)| limiter.try_acquire(bad).is_ok())
        },
    )
    .await;
}

#[tokio::test]
async fn a_policy_ban_on_one_node_refuses_the_client_on_the_others() {
    let redis = Redis::start();
    let config = Config {
        request_rate: Some(RateLimit::new(1, Duration::from_secs(60))),
        ban: Some(BanPolicy::new(
            1,
            Duration::from_secs(60),
            Duration::from_secs(600),
        )),
        ..Config::default()
    };
    let nodes = nodes(&redis.url(), "policy", config);
    all_connected(&nodes).await;
    let client = ip("198.51.100.9");
    let a = &nodes[0].0;
    assert!(a.try_acquire_request(client).is_ok());
    for _ in 0..2 {
        assert!(a.try_acquire_request(client).is_err());
    }
    assert!(banned(a, client), "banned on A");
    let took = wait_for(
        "the ban reaches B and C",
        Duration::from_millis(1500),
        || {
            nodes[1..]
                .iter()
                .all(|(limiter, _)| banned(limiter, client))
        },
    )
    .await;
    println!("a policy ban reached the other nodes in {took:?}");
    assert!(nodes[1].0.try_acquire(ip("198.51.100.10")).is_ok());
}

#[tokio::test]
async fn round_robin_over_the_nodes_a_client_gets_the_fleet_rate() {
    let redis = Redis::start();
    let rate = 30;
    let config = Config {
        request_rate: Some(RateLimit::new(rate, Duration::from_secs(3))),
        ..Config::default()
    };
    let nodes = nodes(&redis.url(), "rates", config);
    all_connected(&nodes).await;
    let client = ip("192.0.2.44");
    let started = Instant::now();
    let mut admitted = 0;
    let mut attempts = 0;
    // One window: 3 s, an attempt every 10 ms, round robin (at most 300 attempts).
    while started.elapsed() < Duration::from_secs(3) && attempts < 300 {
        let (limiter, _) = &nodes[attempts % nodes.len()];
        admitted += usize::from(limiter.try_acquire_request(client).is_ok());
        attempts += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("{admitted} of {attempts} admitted in one window, the rule allowing {rate}");
    assert!(admitted >= rate as usize, "at least the rate: {admitted}");
    assert!(
        admitted * 2 <= rate as usize * 3,
        "at most 1.5 times the rate: {admitted} (alone, each node would admit {rate})"
    );
}

#[tokio::test]
async fn without_redis_each_node_keeps_its_limits_and_bans_flow_again_after() {
    let mut redis = Redis::start();
    let port = redis.port;
    let config = Config {
        max_conns_per_client: 1,
        ..Config::default()
    };
    let nodes = nodes(&redis.url(), "outage", config);
    all_connected(&nodes).await;
    redis.stop();
    wait_for("every node sees the outage", WAIT, || {
        nodes.iter().all(|(_, fleet)| !fleet.status().connected)
    })
    .await;
    let health = nodes[0].0.stats().fleet.expect("in a fleet");
    assert!(!health.connected && health.sync_errors > 0, "{health:?}");
    // Each node serves and enforces its own limits, without waiting.
    for (i, (limiter, _)) in nodes.iter().enumerate() {
        let client = ip(&format!("192.0.2.{}", 10 + i));
        let held = limiter.try_acquire(client).expect("served without Redis");
        assert_eq!(
            limiter.try_acquire(client).unwrap_err().reason(),
            RejectReason::ClientConnections
        );
        drop(held);
    }
    // A ban made during the outage is published once Redis is back.
    let during = ip("203.0.113.1");
    nodes[0].0.ban(during, Duration::from_secs(600));
    let _redis = Redis::start_on(port);
    wait_for("every node reconnects", WAIT, || {
        nodes.iter().all(|(_, fleet)| fleet.status().connected)
    })
    .await;
    let after = ip("203.0.113.2");
    nodes[2].0.ban(after, Duration::from_secs(600));
    let took = wait_for("bans flow again", Duration::from_secs(5), || {
        banned(&nodes[1].0, during) && banned(&nodes[0].0, after) && banned(&nodes[1].0, after)
    })
    .await;
    println!("after the restart, bans reached the other nodes in {took:?}");
}

#[tokio::test]
async fn a_redis_that_never_answers_does_not_hold_admissions_up() {
    // Accepts connections, reads nothing, answers nothing.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}/", silent.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        let mut connections = Vec::new();
        // Bounded: the first 50 connections, then the thread ends (and the test with it).
        for stream in silent.incoming().take(50) {
            connections.push(stream);
        }
    });
    let limiter = Limiter::new(Config {
        request_rate: Some(RateLimit::new(1_000_000, Duration::from_secs(1))),
        ..Config::default()
    });
    let mut config = FleetConfig::new(url, "lonely");
    config.sync_timeout = Duration::from_millis(300);
    let fleet = Fleet::join(&limiter, config).unwrap();
    wait_for("the silent Redis counts as an error", WAIT, || {
        fleet.status().sync_errors > 0
    })
    .await;
    // Admissions go on, each deciding locally: 10,000 of them within far less than one sync
    // timeout each would take.
    let started = Instant::now();
    for i in 0..10_000u32 {
        let client = IpAddr::from((0x0a00_0000 + i % 100).to_be_bytes());
        assert!(limiter.try_acquire_request(client).is_ok());
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(!fleet.status().connected);
    drop(fleet);
    drop(held);
}
