//! The layered gate: path rules, bans, dry-run, the decision API and bounded state, on a fake
//! clock.

use std::net::IpAddr;
use std::time::Duration;

use http::Method;
use tower_connlimit::{
    ban::BanPolicy, ban::BanReason, clock::FakeClock, config::WhenFull, rate::PathRule,
    rate::Strategy, Config, Limiter, RateLimit, RejectReason,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn gate(config: Config) -> (Limiter, FakeClock) {
    let clock = FakeClock::new();
    (
        Limiter::try_with_clock(config, clock.clone()).unwrap(),
        clock,
    )
}

fn connect_flood_config() -> Config {
    Config {
        connect_rate: Some(RateLimit::new(1, secs(1)).strategy(Strategy::Cooldown)),
        ban: Some(BanPolicy::new(3, secs(10), secs(60))),
        ..Config::default()
    }
}

#[test]
fn path_rules_apply_only_to_their_routes() {
    let (limiter, _clock) = gate(Config {
        path_rules: vec![
            PathRule::exact("/login", RateLimit::new(1, secs(60))).method(Method::POST),
            PathRule::prefix("/api", RateLimit::new(2, secs(60))),
        ],
        ..Config::default()
    });
    let client = ip("192.0.2.1");
    let post = |path: &str| limiter.try_acquire_request_to(client, "POST", path);
    let get = |path: &str| limiter.try_acquire_request_to(client, "GET", path);

    assert!(post("/login").is_ok());
    let refused = post("/login").unwrap_err();
    assert_eq!(refused.reason(), RejectReason::PathRule);
    assert!(refused.retry_after().is_some());
    assert!(get("/login").is_ok(), "the rule is for POST only");
    assert!(post("/login/").is_ok(), "exact means exact");
    for _ in 0..5 {
        assert!(get("/other").is_ok(), "unconfigured routes are not limited");
        assert!(get("/apix").is_ok(), "a prefix matches whole segments");
    }
    assert!(get("/api").is_ok());
    assert!(get("/api/users").is_ok());
    assert_eq!(
        get("/api/items").unwrap_err().reason(),
        RejectReason::PathRule
    );
    // Another client has its own count.
    assert!(limiter
        .try_acquire_request_to(ip("192.0.2.2"), "POST", "/login")
        .is_ok());
    assert_eq!(limiter.stats().rejected["path_rule"], 2);
}

#[test]
fn a_connect_flood_is_banned_then_readmitted_after_the_ttl() {
    let (limiter, clock) = gate(connect_flood_config());
    let flooder = ip("192.0.2.66");
    let _honest = limiter.try_acquire(ip("192.0.2.7")).unwrap();
    let _first = limiter.try_acquire(flooder).unwrap();
    // Four refusals within 10 s: the fourth violation crosses max_violations = 3.
    let mut reasons = Vec::new();
    for n in 0..6u8 {
        clock.advance(Duration::from_millis(100));
        reasons.push(limiter.try_acquire(flooder).unwrap_err().reason());
        // Other clients are unaffected throughout: the one connected stays, newcomers get in.
        assert_eq!(limiter.open_connections(ip("192.0.2.7")), 1);
        drop(
            limiter
                .try_acquire(IpAddr::from([192, 0, 2, 100 + n]))
                .unwrap(),
        );
    }
    use RejectReason::{Banned, ConnectRate};
    assert_eq!(
        reasons,
        [
            ConnectRate,
            ConnectRate,
            ConnectRate,
            ConnectRate,
            Banned,
            Banned
        ]
    );
    assert_eq!(limiter.stats().bans, 1);
    let banned = limiter.bans();
    assert_eq!(banned.len(), 1);
    assert_eq!(banned[0].0.to_string(), "192.0.2.66");
    // The ban says why: the policy's threshold, crossed by the connect rate.
    assert_eq!(
        banned[0].1.reason,
        BanReason::Policy {
            last: ConnectRate,
            violations: 4,
            within: secs(10)
        }
    );
    assert_eq!(
        banned[0].1.reason.to_string(),
        "rate limits exceeded 4 times in 10s (last: connect_rate)"
    );

    // The ban outlasts the rate: a second later the rate would pass, the ban does not.
    clock.advance(secs(30));
    let refused = limiter.try_acquire(flooder).unwrap_err();
    assert_eq!(refused.reason(), Banned);
    assert_eq!(refused.to_string(), "come back later");
    let left = refused.retry_after().unwrap();
    assert!(left <= secs(30) && left > secs(29), "{left:?}");

    clock.advance(secs(31));
    assert!(
        limiter.try_acquire(flooder).is_ok(),
        "readmitted after the TTL"
    );
    assert!(limiter.bans().is_empty());
}

#[test]
fn repeat_offenders_are_banned_longer() {
    let (limiter, clock) = gate(Config {
        ban: Some(BanPolicy::new(1, secs(10), secs(60)).escalate(secs(3600))),
        ..connect_flood_config()
    });
    let flooder = ip("192.0.2.66");
    let mut ban_lengths = Vec::new();
    for _ in 0..3 {
        let _held = limiter.try_acquire(flooder).unwrap();
        assert_eq!(
            limiter.try_acquire(flooder).unwrap_err().reason(),
            RejectReason::ConnectRate
        );
        let banned = limiter.try_acquire(flooder).unwrap_err();
        assert_eq!(
            banned.reason(),
            RejectReason::ConnectRate,
            "second violation: ban now"
        );
        let ban = limiter.try_acquire(flooder).unwrap_err();
        assert_eq!(ban.reason(), RejectReason::Banned);
        ban_lengths.push(ban.retry_after().unwrap());
        clock.advance(ban.retry_after().unwrap());
    }
    assert_eq!(ban_lengths, [secs(60), secs(120), secs(240)]);
}

#[test]
fn ban_jitter_stays_within_its_bound() {
    let (limiter, clock) = gate(Config {
        ban: Some(BanPolicy::new(1, secs(10), secs(60)).jitter(secs(5))),
        ..connect_flood_config()
    });
    for n in 1..=20u8 {
        let client = IpAddr::from([198, 51, 100, n]);
        let _held = limiter.try_acquire(client).unwrap();
        let _ = limiter.try_acquire(client);
        let _ = limiter.try_acquire(client);
        let ban = limiter.try_acquire(client).unwrap_err();
        let length = ban.retry_after().unwrap();
        assert!((secs(60)..=secs(65)).contains(&length), "{length:?}");
        clock.advance(Duration::from_millis(7));
    }
}

#[test]
fn dry_run_never_refuses_yet_counts() {
    let (limiter, _clock) = gate(Config {
        max_conns_per_client: 0,
        connect_rate: Some(RateLimit::new(1, secs(1)).dry_run()),
        request_rate: Some(RateLimit::new(1, secs(1)).dry_run()),
        path_rules: vec![PathRule::exact("/x", RateLimit::new(1, secs(1)).dry_run())],
        ban: Some(BanPolicy::new(1, secs(10), secs(60)).dry_run()),
        ..Config::default()
    });
    let client = ip("192.0.2.1");
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(limiter.try_acquire(client).unwrap());
        drop(limiter.try_acquire_request_to(client, "GET", "/x").unwrap());
    }
    let stats = limiter.stats();
    assert_eq!(stats.rejected.total(), 0);
    // 9 connects, 9 requests and 9 path hits would have been refused. A dry-run refusal is not
    // a violation, so the ban policy has nothing to count.
    assert_eq!(stats.dry_run, 27, "{stats:?}");
    assert_eq!(stats.bans, 0);
    assert!(limiter.bans().is_empty());
}

#[test]
fn a_dry_run_ban_policy_counts_the_bans_it_would_make() {
    let (limiter, _clock) = gate(Config {
        ban: Some(BanPolicy::new(1, secs(10), secs(60)).dry_run()),
        ..connect_flood_config()
    });
    let client = ip("192.0.2.1");
    let _held = limiter.try_acquire(client).unwrap();
    // The rate is enforced: every further attempt is a real refusal and a violation. The
    // second violation would ban; the dry-run policy counts it and bans no one.
    for _ in 0..5 {
        let refused = limiter.try_acquire(client).unwrap_err();
        assert_eq!(refused.reason(), RejectReason::ConnectRate);
    }
    let stats = limiter.stats();
    assert_eq!(stats.rejected["connect_rate"], 5);
    assert_eq!(stats.bans, 0);
    // Violations 2 and 4 cross the threshold of 1: each crossing starts the record afresh, as
    // a real ban would, so a client that keeps going is noted once per crossing.
    assert_eq!(stats.dry_run, 2, "{stats:?}");
    assert!(limiter.bans().is_empty());
}

#[test]
fn manual_bans_and_unbans() {
    let (limiter, clock) = gate(Config::default());
    let client = ip("2001:db8:1:2::5");
    limiter.ban(client, secs(300));
    // The ban covers the client key: the whole /64.
    let refused = limiter.try_acquire(ip("2001:db8:1:2::9")).unwrap_err();
    assert_eq!(refused.reason(), RejectReason::Banned);
    assert_eq!(limiter.bans()[0].0.to_string(), "2001:db8:1:2::/64");
    assert!(limiter.try_acquire_request(client).is_err());
    assert!(limiter.unban(client));
    assert!(!limiter.unban(client));
    assert!(limiter.try_acquire(client).is_ok());

    limiter.ban(ip("192.0.2.9"), secs(5));
    clock.advance(secs(6));
    assert!(
        limiter.try_acquire(ip("192.0.2.9")).is_ok(),
        "bans expire on their own"
    );
}

#[test]
fn a_custom_server_drops_a_refused_request_and_closes_on_a_ban() {
    let (limiter, _clock) = gate(Config {
        max_requests_per_client: 1,
        ..Config::default()
    });
    let client = ip("192.0.2.1");
    let _conn = limiter.try_acquire(client).expect("first connection");
    let _request = limiter
        .try_acquire_request_to(client, "GET", "/")
        .expect("first request");
    let refused = limiter
        .try_acquire_request_to(client, "GET", "/")
        .unwrap_err();
    assert_eq!(
        refused.reason(),
        RejectReason::ClientRequests,
        "answer 429, keep it open"
    );
    limiter.ban(client, secs(60));
    let refused = limiter
        .try_acquire_request_to(client, "GET", "/")
        .unwrap_err();
    assert_eq!(
        refused.reason(),
        RejectReason::Banned,
        "close the connection"
    );
    assert_eq!(
        limiter.try_acquire(client).unwrap_err().reason(),
        RejectReason::Banned
    );
}

#[test]
fn a_million_one_off_clients_stay_under_the_bound_and_drain_to_zero() {
    const MAX: usize = 10_000;
    let (limiter, clock) = gate(Config {
        max_tracked_clients: MAX,
        ..connect_flood_config()
    });
    let mut most = 0;
    for i in 0..1_000_000u32 {
        let client = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
        drop(limiter.try_acquire(client).expect("room is always made"));
        if i % 1000 == 0 {
            most = most.max(limiter.stats().tracked_clients);
            // 1 ms in all: no record expires (cooldown 1 s) and no sweep runs during the
            // flood, so every client leaves by eviction and the count below is exact.
            clock.advance(Duration::from_micros(1));
        }
    }
    let stats = limiter.stats();
    most = most.max(stats.tracked_clients);
    assert!(most <= MAX, "tracked {most} > {MAX}");
    // Every newcomer got in, each drained client was forgotten at most once.
    assert_eq!(stats.admitted_connections, 1_000_000);
    assert_eq!(stats.evictions + stats.tracked_clients as u64, 1_000_000);
    assert_eq!(stats.rejected["tracked_clients_full"], 0);
    clock.advance(secs(2));
    limiter.purge_expired();
    assert_eq!(limiter.stats().tracked_clients, 0);
}

#[test]
fn when_full_refuse_new_keeps_every_record() {
    let (limiter, clock) = gate(Config {
        max_tracked_clients: 2,
        when_full: WhenFull::RefuseNew,
        ..connect_flood_config()
    });
    drop(limiter.try_acquire(ip("192.0.2.1")).unwrap());
    drop(limiter.try_acquire(ip("192.0.2.2")).unwrap());
    let refused = limiter.try_acquire(ip("192.0.2.3")).unwrap_err();
    assert_eq!(refused.reason(), RejectReason::TrackedClientsFull);
    assert_eq!(refused.to_string(), "server busy");
    // Known clients are still decided against their records.
    assert_eq!(
        limiter.try_acquire(ip("192.0.2.1")).unwrap_err().reason(),
        RejectReason::ConnectRate
    );
    clock.advance(secs(2));
    assert!(
        limiter.try_acquire(ip("192.0.2.3")).is_ok(),
        "the sweep made room"
    );
}

#[test]
fn an_evicted_flooder_is_counted() {
    let (limiter, _clock) = gate(Config {
        max_tracked_clients: 1,
        ..connect_flood_config()
    });
    drop(limiter.try_acquire(ip("192.0.2.1")).unwrap());
    assert!(limiter.try_acquire(ip("192.0.2.1")).is_err());
    // A newcomer pushes the drained flooder out; the flooder's allowance is fresh again, and
    // the eviction says so.
    drop(limiter.try_acquire(ip("192.0.2.2")).unwrap());
    assert_eq!(limiter.stats().evictions, 1);
    assert!(limiter.try_acquire(ip("192.0.2.1")).is_ok());
    assert_eq!(limiter.stats().evictions, 2);
}

#[test]
fn clients_with_open_connections_are_never_evicted() {
    let (limiter, _clock) = gate(Config {
        max_tracked_clients: 2,
        ..Config::default()
    });
    let _a = limiter.try_acquire(ip("192.0.2.1")).unwrap();
    let _b = limiter.try_acquire(ip("192.0.2.2")).unwrap();
    let refused = limiter.try_acquire(ip("192.0.2.3")).unwrap_err();
    assert_eq!(refused.reason(), RejectReason::TrackedClientsFull);
    assert_eq!(limiter.open_connections(ip("192.0.2.1")), 1);
}

#[test]
fn bad_gate_configs_name_the_field() {
    let err = Limiter::try_new(Config {
        path_rules: vec![PathRule::exact("login", RateLimit::new(1, secs(1)))],
        ..Config::default()
    })
    .unwrap_err();
    assert_eq!(err.field(), "path_rules[0].path");
    let err = Limiter::try_new(Config {
        ban: Some(BanPolicy::new(3, secs(10), secs(60)).escalate(secs(30))),
        ..Config::default()
    })
    .unwrap_err();
    assert_eq!(err.field(), "ban.max_ban_for");
    let err = Limiter::try_new(Config {
        ban: Some(BanPolicy::new(0, secs(10), secs(60))),
        ..Config::default()
    })
    .unwrap_err();
    assert_eq!(err.field(), "ban.max_violations");
}

mod support;

#[tokio::test]
async fn the_listener_closes_a_banned_client_at_accept() {
    let (limiter, clock) = gate(Config::default());
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut listener = tower_connlimit::ConnLimitListener::new(tcp, limiter.clone());
    let server = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut io, _)) = listener.accept().await {
            let _ = tokio::io::AsyncWriteExt::write_all(&mut io, b"hi").await;
            held.push(io);
        }
    });
    limiter.ban(support::client_ip(50), secs(60));
    let mut banned = support::connect_from(50, server).await;
    assert!(support::was_refused(&mut banned).await);
    let mut other = support::connect_from(51, server).await;
    assert!(!support::was_refused(&mut other).await);
    assert_eq!(limiter.stats().rejected["banned"], 1);
    clock.advance(secs(61));
    let mut back = support::connect_from(50, server).await;
    assert!(!support::was_refused(&mut back).await, "the ban expired");
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn path_rules_over_http_limit_only_their_route() {
    use axum::routing::{get, post};

    let (limiter, _clock) = gate(Config {
        path_rules: vec![
            PathRule::exact("/login", RateLimit::new(1, secs(30))).method(Method::POST)
        ],
        ..Config::default()
    });
    let app = axum::Router::new()
        .route("/login", post(|| async { "welcome" }))
        .route("/", get(|| async { "hello" }))
        .layer(tower_connlimit::ConnLimitLayer::with_limiter(
            limiter.clone(),
        ));
    let server = support::serve_with_connect_info(app).await;
    let mut client = support::http1_client(support::connect_from(52, server).await).await;
    let login = || {
        http::Request::post("/login")
            .header("host", "x")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    let response = support::bounded(client.send_request(login()))
        .await
        .unwrap();
    assert_eq!(support::collect(response).await.0, 200);
    support::bounded(client.ready()).await.unwrap();
    let response = support::bounded(client.send_request(login()))
        .await
        .unwrap();
    let (status, headers, body) = support::collect(response).await;
    assert_eq!(status, 429);
    // The sliding window first passes at 30 s + 1 ns: the client is told a coarse wait, never
    // shorter (the next step, 60 s, and up to a fifth of it at random).
    let told: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((60..=72).contains(&told), "{told}");
    assert_eq!(body, "come back later");
    for _ in 0..3 {
        assert_eq!(support::h1_get(&mut client, "/").await.0, 200);
    }
}

#[tokio::test]
async fn the_listeners_http_refusal_of_a_ban_says_when_to_retry() {
    use tokio::io::AsyncWriteExt;
    let (limiter, _clock) = gate(Config::default());
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut listener = tower_connlimit::ConnLimitListener::new(tcp, limiter.clone())
        .reject_with(tower_connlimit::listener::RejectAction::HttpResponse);
    let server = listener.local_addr().unwrap();
    tokio::spawn(async move { while listener.accept().await.is_ok() {} });
    limiter.ban(support::client_ip(53), Duration::from_millis(59_500));
    let mut banned = support::connect_from(53, server).await;
    banned
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = support::read_to_close(&mut banned).await.unwrap();
    // 59.5 s left, told as the step of 60 s with up to 12 s added: not the ban's exact end.
    let told: u64 = answer
        .strip_prefix("HTTP/1.1 429 Too Many Requests\r\nretry-after: ")
        .and_then(|rest| rest.split("\r\n").next())
        .and_then(|secs| secs.parse().ok())
        .unwrap_or_else(|| panic!("{answer}"));
    assert!((60..=72).contains(&told), "{answer}");
    // The reason's own generic message, as the layers send it.
    assert!(answer.ends_with("\r\n\r\ncome back later\n"), "{answer}");
}

#[test]
fn a_ban_keeps_its_reason_until_it_ends_and_forgets_it_with_the_ban() {
    let (limiter, clock) = gate(Config::default());
    let (one, two) = (ip("192.0.2.1"), ip("192.0.2.2"));
    limiter.ban_with_reason(one, secs(60), BanReason::given("scraping /search"));
    limiter.ban(two, secs(30));
    let reasons = |limiter: &Limiter| {
        let mut bans: Vec<(String, String)> = limiter
            .bans()
            .into_iter()
            .map(|(key, ban)| (key.to_string(), ban.reason.to_string()))
            .collect();
        bans.sort();
        bans
    };
    assert_eq!(
        reasons(&limiter),
        [
            ("192.0.2.1".to_owned(), "scraping /search".to_owned()),
            ("192.0.2.2".to_owned(), "banned by the operator".to_owned()),
        ]
    );
    // A shorter ban leaves the longer one, and its reason, in force.
    limiter.ban_with_reason(one, secs(5), BanReason::given("again"));
    assert_eq!(reasons(&limiter)[0].1, "scraping /search");
    // Expired: the reason goes with the ban; a new ban gets its own.
    clock.advance(secs(31));
    assert_eq!(reasons(&limiter).len(), 1);
    limiter.ban_with_reason(two, secs(30), BanReason::given("back at it"));
    assert_eq!(reasons(&limiter)[1].1, "back at it");
    // Lifted: forgotten.
    assert!(limiter.unban(one));
    assert_eq!(
        reasons(&limiter),
        [("192.0.2.2".to_owned(), "back at it".to_owned())]
    );
}

#[test]
fn a_network_bans_reason_is_its_clients_reason() {
    let (limiter, _clock) = gate(Config::default());
    let network = "203.0.113.0/24".parse().unwrap();
    drop(limiter.try_acquire(ip("203.0.113.7")).unwrap());
    limiter.ban_network_with_reason(network, secs(600), BanReason::given("botnet"));
    assert!(
        limiter.try_acquire(ip("203.0.113.8")).is_err(),
        "a newcomer"
    );
    let networks = limiter.banned_networks();
    assert_eq!(networks.len(), 1);
    assert_eq!(networks[0].1.reason.to_string(), "botnet");
    let clients = limiter.bans();
    assert_eq!(clients.len(), 2);
    assert!(clients
        .iter()
        .all(|(_, ban)| ban.reason.to_string() == "botnet"));
}
