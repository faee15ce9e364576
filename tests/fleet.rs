//! Limiters on several "nodes" sharing bans and rates through real `redis-server` processes,
//! started by the tests on free loopback ports (`scripts/test.sh` installs them): bans spread
//! (clients' and networks', with their reasons) and are never lifted by an emptied, restarted or
//! full Redis; a client round robin over the nodes is held to the fleet's rate within the
//! documented bound, on one server and on a Redis Cluster of three masters; Redis killed,
//! restarted and absent at start; a Redis that accepts connections but never answers; a wrong
//! password and a duplicate node name refused at join; TLS with a CA of the test's own.
#![cfg(feature = "redis")]

#[path = "support/redis.rs"]
mod redis_server;

use std::net::{IpAddr, TcpListener};
use std::time::{Duration, Instant};

use redis_server::{free_port, Cluster, Options, Redis};

use tower_connlimit::ban::{BanPolicy, BanReason};
use tower_connlimit::fleet::{Fleet, FleetConfig};
use tower_connlimit::keys::RequestKey;
use tower_connlimit::{Cidr, Config, Limiter, RateLimit, RejectReason};

const INTERVAL: Duration = Duration::from_millis(100);
/// How long a test waits for the fleet, at most.
const WAIT: Duration = Duration::from_secs(10);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `config` for node `node` of the fleet under `prefix`, syncing every [`INTERVAL`].
fn fleet_config(mut config: FleetConfig, prefix: &str) -> FleetConfig {
    config.prefix = prefix.to_owned();
    config.sync_interval = INTERVAL;
    config
}

/// A limiter with `config` joined to the fleet `fleet` describes.
async fn node(config: &Config, fleet: FleetConfig) -> (Limiter, Fleet) {
    let limiter = Limiter::new(config.clone());
    let joined = Fleet::join(&limiter, fleet).await.unwrap();
    (limiter, joined)
}

/// Limiters with `config`, one per name, each in the fleet at `url` under `prefix`.
async fn nodes(url: &str, names: &[&str], prefix: &str, config: Config) -> Vec<(Limiter, Fleet)> {
    let mut nodes = Vec::new();
    for name in names {
        let fleet = fleet_config(FleetConfig::new(url, *name), prefix);
        nodes.push(node(&config, fleet).await);
    }
    nodes
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
        nodes
            .iter()
            .all(|(_, fleet)| fleet.status().connected && fleet.status().syncs > 1)
    })
    .await;
    for (limiter, fleet) in nodes {
        let status = limiter.stats().fleet.expect("in a fleet");
        assert!(status.last_sync_age.is_some(), "{status:?}");
        assert_eq!(status.node, fleet.status().node);
    }
}

fn banned(limiter: &Limiter, client: IpAddr) -> bool {
    matches!(limiter.try_acquire(client), Err(r) if r.reason() == RejectReason::Banned)
}

/// The ban reasons `limiter` holds for `client`.
fn reason_of(limiter: &Limiter, client: IpAddr) -> Option<String> {
    let key = limiter.client(client)?.key;
    limiter
        .bans()
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, ban)| ban.reason.to_string())
}

#[tokio::test]
async fn every_node_sees_every_node_of_its_fleet() {
    let redis = Redis::start();
    let nodes = nodes(&redis.url(), &["a", "b", "c"], "nodes", Config::default()).await;
    all_connected(&nodes).await;
    let names = |limiter: &Limiter| -> Vec<(String, bool, bool)> {
        let status = limiter.stats().fleet.expect("in a fleet");
        (status.nodes.iter())
            .map(|n| (n.node.clone(), n.this_node, n.connected))
            .collect()
    };
    wait_for("each node lists the three", WAIT, || {
        nodes.iter().all(|(limiter, _)| names(limiter).len() == 3)
    })
    .await;
    let seen_by_b = names(&nodes[1].0);
    assert_eq!(
        seen_by_b,
        [
            ("a".into(), false, true),
            ("b".into(), true, true),
            ("c".into(), false, true)
        ]
    );
    // A node that leaves stops heartbeating: after the name's time to live (ten sync
    // intervals), the others see it disconnected.
    let mut nodes = nodes;
    drop(nodes.pop());
    wait_for("c is seen disconnected", WAIT, || {
        (names(&nodes[0].0).iter()).any(|(name, _, connected)| name == "c" && !connected)
    })
    .await;
}

#[tokio::test]
async fn a_ban_and_its_lifting_reach_every_node_with_its_reason() {
    let redis = Redis::start();
    let nodes = nodes(&redis.url(), &["a", "b", "c"], "bans", Config::default()).await;
    all_connected(&nodes).await;
    let (bad, good) = (ip("203.0.113.66"), ip("203.0.113.7"));
    nodes[0].0.ban_with_reason(
        bad,
        Duration::from_secs(600),
        BanReason::given("scraping /login"),
    );
    let network: Cidr = "198.18.0.0/16".parse().unwrap();
    nodes[0].0.ban_network(network, Duration::from_secs(600));
    let took = wait_for(
        "the bans reach B and C",
        Duration::from_millis(1500),
        || {
            nodes[1..]
                .iter()
                .all(|(limiter, _)| banned(limiter, bad) && banned(limiter, ip("198.18.3.4")))
        },
    )
    .await;
    println!("a manual ban reached the other nodes in {took:?}");
    assert_eq!(
        reason_of(&nodes[2].0, bad).as_deref(),
        Some("scraping /login")
    );
    let networks = nodes[1].0.banned_networks();
    assert_eq!(networks.len(), 1, "{networks:?}");
    assert_eq!(networks[0].0, network);
    assert_eq!(networks[0].1.reason.to_string(), "banned by the operator");
    for (limiter, _) in &nodes {
        assert!(
            limiter.try_acquire(good).is_ok(),
            "another client is served"
        );
    }
    // Each ban is counted once, by the node that made it; the others count what they applied.
    assert_eq!(nodes[0].0.stats().bans, 2);
    for (limiter, fleet) in &nodes[1..] {
        assert_eq!(limiter.stats().bans, 0);
        assert!(fleet.status().bans_applied >= 2, "{:?}", fleet.status());
    }
    assert!(nodes[0].1.status().bans_published >= 2);
    // Lifted on B: lifted everywhere.
    assert!(nodes[1].0.unban(bad));
    assert!(nodes[2].0.unban_network(network));
    wait_for(
        "the lifts reach every node",
        Duration::from_millis(1500),
        || {
            nodes.iter().all(|(limiter, _)| {
                limiter.try_acquire(bad).is_ok() && limiter.try_acquire(ip("198.18.3.4")).is_ok()
            })
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
    let nodes = nodes(&redis.url(), &["a", "b", "c"], "policy", config).await;
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
    let reason = reason_of(&nodes[1].0, client).unwrap();
    assert!(
        reason.starts_with("rate limits exceeded 2 times"),
        "{reason}"
    );
    assert!(nodes[1].0.try_acquire(ip("198.51.100.10")).is_ok());
    assert_eq!((a.stats().bans, nodes[1].0.stats().bans), (1, 0));
}

/// Round robin over `nodes`, an attempt every 10 ms for one 3 s window: how many were admitted.
async fn round_robin(nodes: &[(Limiter, Fleet)], client: IpAddr) -> (usize, usize) {
    let started = Instant::now();
    let (mut admitted, mut attempts) = (0, 0);
    // At most 300 attempts.
    while started.elapsed() < Duration::from_secs(3) && attempts < 300 {
        let (limiter, _) = &nodes[attempts % nodes.len()];
        admitted += usize::from(limiter.try_acquire_request(client).is_ok());
        attempts += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (admitted, attempts)
}

fn rate_of(events: u32) -> Config {
    Config {
        request_rate: Some(RateLimit::new(events, Duration::from_secs(3))),
        ..Config::default()
    }
}

#[tokio::test]
async fn round_robin_over_the_nodes_a_client_gets_the_fleet_rate() {
    let redis = Redis::start();
    let rate = 30;
    let nodes = nodes(&redis.url(), &["a", "b", "c"], "rates", rate_of(rate)).await;
    all_connected(&nodes).await;
    let (admitted, attempts) = round_robin(&nodes, ip("192.0.2.44")).await;
    println!("{admitted} of {attempts} admitted in one window, the rule allowing {rate}");
    assert!(admitted >= rate as usize, "at least the rate: {admitted}");
    assert!(
        admitted * 2 <= rate as usize * 3,
        "at most 1.5 times the rate: {admitted} (alone, each node would admit {rate})"
    );
}

#[tokio::test]
async fn a_key_gets_the_fleet_rate_over_the_nodes_whatever_addresses_it_comes_from() {
    let redis = Redis::start();
    let rate = 30;
    let nodes = nodes(&redis.url(), &["a", "b", "c"], "keys", rate_of(rate)).await;
    all_connected(&nodes).await;
    let key = RequestKey::new("sk_fleet_key");
    let started = Instant::now();
    let (mut admitted, mut attempts) = (0, 0);
    // At most 300 attempts, one 3 s window; each node sees the key from an address of its own.
    while started.elapsed() < Duration::from_secs(3) && attempts < 300 {
        let (limiter, _) = &nodes[attempts % nodes.len()];
        let from = IpAddr::from([192, 0, 2, 100 + (attempts % nodes.len()) as u8]);
        admitted += usize::from(
            limiter
                .try_acquire_request_as(from, &key, "GET", "/")
                .is_ok(),
        );
        attempts += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "{admitted} of {attempts} keyed requests admitted in one window, the rule allowing {rate}"
    );
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
    let nodes = nodes(&redis.url(), &["a", "b", "c"], "outage", config).await;
    all_connected(&nodes).await;
    let before = ip("203.0.113.9");
    nodes[0].0.ban(before, Duration::from_secs(600));
    wait_for("the ban spreads", WAIT, || {
        nodes.iter().all(|(limiter, _)| banned(limiter, before))
    })
    .await;
    redis.stop();
    wait_for("every node sees the outage", WAIT, || {
        nodes.iter().all(|(_, fleet)| !fleet.status().connected)
    })
    .await;
    let status = nodes[0].0.stats().fleet.expect("in a fleet");
    assert!(!status.connected && status.sync_errors > 0, "{status:?}");
    let connection = status.error("connection").unwrap();
    assert!(
        connection.count > 0 && connection.last.is_some(),
        "{status:?}"
    );
    // Each node serves and enforces its own limits, without waiting, and keeps its bans.
    for (i, (limiter, _)) in nodes.iter().enumerate() {
        let client = ip(&format!("192.0.2.{}", 10 + i));
        let held = limiter.try_acquire(client).expect("served without Redis");
        assert_eq!(
            limiter.try_acquire(client).unwrap_err().reason(),
            RejectReason::ClientConnections
        );
        drop(held);
        assert!(banned(limiter, before));
    }
    // A ban made during the outage is published once Redis is back, empty.
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
    assert!(nodes.iter().all(|(limiter, _)| banned(limiter, before)));
}

#[tokio::test]
async fn a_node_started_while_redis_is_away_joins_when_it_answers() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/");
    let started = Instant::now();
    let (limiter, fleet) = node(
        &Config::default(),
        fleet_config(FleetConfig::new(&url, "late"), "late"),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "join waited {:?}",
        started.elapsed()
    );
    assert!(!fleet.status().connected);
    let client = ip("203.0.113.30");
    limiter.ban(client, Duration::from_secs(600));
    let redis = Redis::start_on(port);
    wait_for("the node joins", WAIT, || fleet.status().connected).await;
    let other = nodes(&redis.url(), &["other"], "late", Config::default()).await;
    wait_for("its ban reaches the fleet", WAIT, || {
        banned(&other[0].0, client)
    })
    .await;
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
    let fleet = Fleet::join(&limiter, config).await.unwrap();
    wait_for("the silent Redis counts as an error", WAIT, || {
        fleet.status().error("timeout").is_some_and(|e| e.count > 0)
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

/// Bans two clients and a network on `nodes[0]` and waits until every node has them.
async fn ban_and_spread(nodes: &[(Limiter, Fleet)]) -> Vec<IpAddr> {
    let clients = [ip("203.0.113.50"), ip("203.0.113.51"), ip("198.19.7.7")];
    let a = &nodes[0].0;
    a.ban(clients[0], Duration::from_secs(600));
    a.ban_with_reason(
        clients[1],
        Duration::from_secs(600),
        BanReason::given("abuse"),
    );
    a.ban_network("198.19.0.0/16".parse().unwrap(), Duration::from_secs(600));
    wait_for("the bans spread", WAIT, || {
        nodes
            .iter()
            .all(|(limiter, _)| clients.iter().all(|c| banned(limiter, *c)))
    })
    .await;
    clients.to_vec()
}

/// Checks, for as long as `lasting`, that every node refuses every one of `clients` and serves
/// an honest one.
async fn no_ban_lifted(nodes: &[(Limiter, Fleet)], clients: &[IpAddr], lasting: Duration) {
    let started = Instant::now();
    // Bounded: `lasting`, a check every 20 ms.
    while started.elapsed() < lasting {
        for (limiter, _) in nodes {
            for client in clients {
                assert!(banned(limiter, *client), "{client} was let in");
            }
            assert!(
                limiter.try_acquire(ip("192.0.2.200")).is_ok(),
                "an honest client refused"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many bans the fleet's Redis holds under `prefix`.
fn bans_in_redis(redis: &Redis, prefix: &str) -> usize {
    redis
        .cli(&["--scan", "--pattern", &format!("{{{prefix}:b*}}:ban:*")])
        .lines()
        .count()
}

#[tokio::test]
async fn an_emptied_or_restarted_redis_lifts_no_ban_and_is_filled_again() {
    let mut redis = Redis::start();
    let port = redis.port;
    let nodes = nodes(&redis.url(), &["a", "b"], "emptied", Config::default()).await;
    all_connected(&nodes).await;
    let clients = ban_and_spread(&nodes).await;
    assert_eq!(bans_in_redis(&redis, "emptied"), 3);
    // FLUSHALL: nothing is lifted, and the nodes put the bans back.
    redis.cli(&["FLUSHALL"]);
    no_ban_lifted(&nodes, &clients, Duration::from_millis(600)).await;
    wait_for("the bans are back in Redis", WAIT, || {
        bans_in_redis(&redis, "emptied") == 3
    })
    .await;
    // A restart without persistence: the same.
    redis.stop();
    redis = Redis::start_on(port);
    no_ban_lifted(&nodes, &clients, Duration::from_millis(600)).await;
    wait_for("the bans are back after the restart", WAIT, || {
        bans_in_redis(&redis, "emptied") == 3
    })
    .await;
    // A node joining now learns them from Redis.
    let late = self::nodes(&redis.url(), &["late"], "emptied", Config::default()).await;
    wait_for("a new node has the bans", WAIT, || {
        clients.iter().all(|c| banned(&late[0].0, *c))
    })
    .await;
    assert_eq!(reason_of(&late[0].0, clients[1]).as_deref(), Some("abuse"));
    assert_eq!(
        nodes[1].0.stats().bans,
        0,
        "re-applied bans are not counted again"
    );
}

#[tokio::test]
async fn a_lift_made_while_a_node_was_away_reaches_it_from_redis() {
    let redis = Redis::start();
    let config = Config::default();
    let mut nodes = nodes(&redis.url(), &["a", "b"], "away", config).await;
    all_connected(&nodes).await;
    let (lifted, kept, own) = (ip("203.0.113.60"), ip("203.0.113.61"), ip("203.0.113.62"));
    nodes[0].0.ban(lifted, Duration::from_secs(600));
    nodes[0].0.ban(kept, Duration::from_secs(600));
    wait_for("B has the bans", WAIT, || {
        banned(&nodes[1].0, lifted) && banned(&nodes[1].0, kept)
    })
    .await;
    // B leaves the fleet, keeping its bans, and bans a client of its own meanwhile; A lifts one.
    let (b, b_fleet) = nodes.pop().unwrap();
    drop(b_fleet);
    b.ban(own, Duration::from_secs(600));
    assert!(nodes[0].0.unban(lifted));
    wait_for("the lift is in Redis", WAIT, || {
        redis
            .cli(&["--scan", "--pattern", "{away:b*}:ban:c:203.0.113.60"])
            .lines()
            .any(|key| redis.cli(&["GET", key]).starts_with("0|"))
    })
    .await;
    // Back: B reads the shards whole, lifts what was lifted, keeps the rest, and publishes its
    // own ban, which the fleet lacked.
    let rejoined = Fleet::join(&b, fleet_config(FleetConfig::new(redis.url(), "b"), "away"))
        .await
        .unwrap();
    wait_for("B hears of the lift", WAIT, || {
        b.try_acquire(lifted).is_ok()
    })
    .await;
    assert!(banned(&b, kept));
    wait_for("B's own ban reaches A", WAIT, || banned(&nodes[0].0, own)).await;
    assert!(
        nodes[0].0.try_acquire(lifted).is_ok(),
        "the lift is not undone"
    );
    drop(rejoined);
}

#[tokio::test]
async fn a_full_redis_lifts_no_ban_and_still_shares_what_it_can() {
    let redis = Redis::with(free_port(), Options::maxmemory("4mb"));
    let nodes = nodes(&redis.url(), &["a", "b"], "full", rate_of(30)).await;
    all_connected(&nodes).await;
    let clients = ban_and_spread(&nodes).await;
    // Fill it: every write is refused from now on.
    redis.cli(&["DEBUG", "POPULATE", "200000", "junk", "100"]);
    assert!(redis.cli(&["SET", "probe", "1"]).contains("OOM"));
    let late_ban = ip("203.0.113.77");
    nodes[0].0.ban(late_ban, Duration::from_secs(600));
    wait_for("the nodes see Redis full", WAIT, || {
        nodes
            .iter()
            .all(|(_, fleet)| fleet.status().error("oom").is_some_and(|e| e.count > 0))
    })
    .await;
    for (_, fleet) in &nodes {
        let status = fleet.status();
        assert!(status.connected, "a full Redis still answers: {status:?}");
        let last = status.error("oom").unwrap().last.clone().unwrap();
        assert!(last.len() <= 1024 && last.contains("OOM"), "{last}");
    }
    no_ban_lifted(&nodes, &clients, Duration::from_millis(500)).await;
    assert!(banned(&nodes[0].0, late_ban));
    // Memory again: the ban that waited reaches the other node.
    redis.cli(&["CONFIG", "SET", "maxmemory", "0"]);
    wait_for("the waiting ban is published", WAIT, || {
        banned(&nodes[1].0, late_ban)
    })
    .await;
}

#[tokio::test]
async fn rate_events_made_during_an_outage_count_after_it() {
    let mut redis = Redis::start();
    let port = redis.port;
    let rate = 10;
    let config = Config {
        request_rate: Some(RateLimit::new(rate, Duration::from_secs(60))),
        ..Config::default()
    };
    let nodes = nodes(&redis.url(), &["a", "b"], "carry", config).await;
    all_connected(&nodes).await;
    redis.stop();
    wait_for("the outage is seen", WAIT, || {
        !nodes[0].1.status().connected
    })
    .await;
    let client = ip("192.0.2.99");
    for _ in 0..rate {
        assert!(nodes[0].0.try_acquire_request(client).is_ok());
    }
    assert!(
        nodes[0].0.try_acquire_request(client).is_err(),
        "A alone holds its rate"
    );
    redis = Redis::start_on(port);
    wait_for("A's events reach Redis", WAIT, || {
        let keys = redis.cli(&["--scan", "--pattern", "{carry:c:192.0.2.99}:r:*"]);
        keys.lines()
            .any(|key| redis.cli(&["GET", key]) == rate.to_string())
    })
    .await;
    wait_for("B is connected", WAIT, || nodes[1].1.status().connected).await;
    // B has not seen the client: its first request passes, and once B has synced, the
    // fleet's total says A's events happened.
    let b = &nodes[1];
    assert!(b.0.try_acquire_request(client).is_ok());
    let syncs = b.1.status().syncs;
    wait_for("B syncs twice", WAIT, || b.1.status().syncs >= syncs + 2).await;
    assert_eq!(
        b.0.try_acquire_request(client).unwrap_err().reason(),
        RejectReason::RequestRate,
        "B knows of A's {rate} events"
    );
}

#[tokio::test]
async fn a_cluster_of_three_masters_shares_bans_and_rates() {
    let cluster = Cluster::start();
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        let config = fleet_config(FleetConfig::cluster(cluster.urls(), name), "cl");
        nodes.push(node(&rate_of(30), config).await);
    }
    all_connected(&nodes).await;
    let clients = ban_and_spread(&nodes).await;
    assert_eq!(nodes[1].0.stats().bans, 0);
    let (admitted, attempts) = round_robin(&nodes, ip("192.0.2.45")).await;
    println!("on a cluster: {admitted} of {attempts} admitted in one window, the rule allowing 30");
    assert!((30..=45).contains(&admitted), "{admitted}");
    // The keys are spread over the masters by their hash tags.
    let per_node = cluster.keys_per_node();
    assert!(
        per_node.iter().filter(|n| **n > 0).count() >= 2,
        "{per_node:?}"
    );
    for (_, fleet) in &nodes {
        assert_eq!(fleet.status().error("cluster").unwrap().count, 0);
    }
    no_ban_lifted(&nodes, &clients, Duration::from_millis(100)).await;
}

#[tokio::test]
async fn a_wrong_password_is_refused_at_join_and_never_shown() {
    let redis = Redis::with(free_port(), Options::password("s3cret-pass"));
    let wrong = format!("redis://:wrong-pass@127.0.0.1:{}/", redis.port);
    let config = fleet_config(FleetConfig::new(&wrong, "a"), "auth");
    assert!(!format!("{config:?}").contains("wrong-pass"));
    let err = Fleet::join(&Limiter::new(Config::default()), config)
        .await
        .unwrap_err();
    assert_eq!(err.field(), "fleet.redis", "{err}");
    let text = err.to_string();
    assert!(
        !text.contains("wrong-pass") && text.contains("credentials"),
        "{text}"
    );
    let none = format!("redis://127.0.0.1:{}/", redis.port);
    let err = Fleet::join(
        &Limiter::new(Config::default()),
        FleetConfig::new(none, "a"),
    )
    .await
    .unwrap_err();
    assert_eq!(err.field(), "fleet.redis", "{err}");
    let nodes = nodes(&redis.url(), &["a"], "auth", Config::default()).await;
    all_connected(&nodes).await;
}

#[tokio::test]
async fn two_nodes_with_one_name_are_told_so() {
    let redis = Redis::start();
    let nodes = nodes(&redis.url(), &["twin"], "twins", Config::default()).await;
    all_connected(&nodes).await;
    let started = Instant::now();
    let config = fleet_config(FleetConfig::new(redis.url(), "twin"), "twins");
    let err = Fleet::join(&Limiter::new(Config::default()), config)
        .await
        .unwrap_err();
    assert_eq!(err.field(), "fleet.node");
    assert!(err.to_string().contains("\"twin\""), "{err}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited one name TTL first"
    );
    // Another instance takes the name later (as a node started while Redis was away would):
    // the node says so, with the name.
    redis.cli(&[
        "SET",
        "{twins:meta}:node:twin",
        "another-instance",
        "PX",
        "5000",
    ]);
    wait_for("the duplicate is seen", WAIT, || {
        nodes[0].1.status().duplicate_name.is_some()
    })
    .await;
    let warning = nodes[0].1.status().duplicate_name.unwrap();
    assert!(warning.contains("\"twin\""), "{warning}");
    // A restarted node takes its name back once the old one's registration expires.
    let (limiter, fleet) = nodes.into_iter().next().unwrap();
    drop(fleet);
    drop(limiter);
    let again = self::nodes(&redis.url(), &["twin"], "twins", Config::default()).await;
    all_connected(&again).await;
}

#[cfg(feature = "redis-tls")]
#[tokio::test]
async fn tls_with_a_ca_of_its_own() {
    let dir = redis_server::temp_dir("tls");
    redis_server::make_certificates(&dir);
    let redis = Redis::with(free_port(), Options::tls(&dir));
    // Without the CA, the server's certificate is not trusted: an error at join.
    let err = Fleet::join(
        &Limiter::new(Config::default()),
        fleet_config(FleetConfig::new(redis.url(), "a"), "tls"),
    )
    .await
    .unwrap_err();
    assert_eq!(err.field(), "fleet.redis", "{err}");
    let mut config = fleet_config(FleetConfig::new(redis.url(), "a"), "tls");
    config.ca_file = Some(dir.join("ca.pem"));
    let mut other = config.clone();
    other.node = "b".into();
    let nodes = vec![
        node(&Config::default(), config).await,
        node(&Config::default(), other).await,
    ];
    all_connected(&nodes).await;
    let client = ip("203.0.113.90");
    nodes[0].0.ban(client, Duration::from_secs(60));
    wait_for("the ban crosses TLS", WAIT, || banned(&nodes[1].0, client)).await;
    let _ = std::fs::remove_dir_all(dir);
}
