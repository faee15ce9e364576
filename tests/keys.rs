//! Requests keyed by an API key, over real sockets: each key gets its tier's limits, invented
//! keys gain nothing over their address's limits, and a tier changed live applies to the next
//! request.

mod support;

use std::time::Duration;

use axum::{routing::get, Router};
use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::http1;
use tower_connlimit::ban::BanReason;
use tower_connlimit::keys::{KeyConfig, KeyTier, RequestKey, Tier};
use tower_connlimit::layer::KeySource;
use tower_connlimit::{Config, ConnLimitLayer, Limiter, RateLimit};

use support::*;

/// Two tiers by request rate: `free` 2 per hour, `pro` 5 per hour (token buckets with no
/// burst beyond the rate, so that the counts are exact), `free` the default.
fn tiers() -> KeyConfig {
    let per_hour = |events| {
        RateLimit::new(events, Duration::from_secs(3600))
            .strategy(tower_connlimit::rate::Strategy::TokenBucket)
    };
    KeyConfig {
        tiers: vec![
            Tier::new("free").request_rate(per_hour(2)),
            Tier::new("pro").request_rate(per_hour(5)),
        ],
        default_tier: Some("free".into()),
        ..KeyConfig::default()
    }
}

/// Serves a router limited by `limiter`, keyed by `x-api-key`; returns its address.
async fn serve(limiter: &Limiter) -> std::net::SocketAddr {
    let app = Router::new().route("/", get(|| async { "ok" })).layer(
        ConnLimitLayer::with_limiter(limiter.clone())
            .keyed_by(KeySource::header("x-api-key".parse().unwrap())),
    );
    serve_with_connect_info(app).await
}

/// Sends a GET for `/` with `x-api-key: key` (none if empty) and returns the status.
async fn get_with_key(sender: &mut http1::SendRequest<Empty<Bytes>>, key: &str) -> u16 {
    let mut request = get_request("/");
    if !key.is_empty() {
        request
            .headers_mut()
            .insert("x-api-key", key.parse().unwrap());
    }
    bounded(sender.ready()).await.unwrap();
    let response = bounded(sender.send_request(request)).await.unwrap();
    collect(response).await.0.as_u16()
}

/// How many of `tries` requests with `key` got 200.
async fn admitted(sender: &mut http1::SendRequest<Empty<Bytes>>, key: &str, tries: usize) -> usize {
    let mut ok = 0;
    for _ in 0..tries {
        match get_with_key(sender, key).await {
            200 => ok += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    ok
}

#[tokio::test]
async fn two_keys_from_one_address_get_their_own_tiers() {
    let pro = RequestKey::new("key-pro").client_key();
    let limiter = Limiter::new(Config {
        keys: KeyConfig {
            assigned: vec![KeyTier {
                key: pro,
                tier: "pro".into(),
            }],
            ..tiers()
        },
        ..Config::default()
    });
    let server = serve(&limiter).await;
    let mut client = http1_client(connect_from(11, server).await).await;
    assert_eq!(admitted(&mut client, "key-free", 8).await, 2, "free: 2");
    assert_eq!(admitted(&mut client, "key-pro", 8).await, 5, "pro: 5");
    // Requests with no key are limited by address alone: no address limit is set.
    assert_eq!(admitted(&mut client, "", 8).await, 8);
    let stats = limiter.stats();
    assert_eq!(stats.rejected["request_rate"], 6 + 3);
    let keys: Vec<_> = limiter
        .clients()
        .into_iter()
        .filter(|c| c.key.fingerprint().is_some())
        .map(|c| c.key)
        .collect();
    assert!(keys.contains(&pro), "the pro key is tracked by fingerprint");
}

#[tokio::test]
async fn keys_invented_per_request_stay_under_their_addresss_limit() {
    let limiter = Limiter::new(Config {
        keys: KeyConfig {
            request_rate_per_address: Some(RateLimit::new(4, Duration::from_secs(3600))),
            ..tiers()
        },
        ..Config::default()
    });
    let server = serve(&limiter).await;
    let mut rotating = http1_client(connect_from(12, server).await).await;
    let mut ok = 0;
    for n in 0..12 {
        if get_with_key(&mut rotating, &format!("invented-{n}")).await == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 4, "the address's 4 per hour, whatever the keys");
    // Another address is not held to the first one's limit.
    let mut other = http1_client(connect_from(13, server).await).await;
    assert_eq!(admitted(&mut other, "another-key", 3).await, 2, "free: 2");
}

#[tokio::test]
async fn a_tier_changed_live_applies_to_the_next_request() {
    // Fixed windows, which count requests: what the key spent under its old tier is a count
    // under the new one. (A token bucket's state is a time: the old tier's requests weigh at
    // their old price.)
    let mut keys = tiers();
    for tier in &mut keys.tiers {
        tier.request_rate = tier
            .request_rate
            .map(|rate| rate.strategy(tower_connlimit::rate::Strategy::FixedWindow));
    }
    let limiter = Limiter::new(Config {
        keys,
        ..Config::default()
    });
    let server = serve(&limiter).await;
    let mut client = http1_client(connect_from(14, server).await).await;
    assert_eq!(admitted(&mut client, "upgrading", 3).await, 2, "free: 2");
    let mut config = (*limiter.config()).clone();
    config.keys.assigned.push(KeyTier {
        key: RequestKey::new("upgrading").client_key(),
        tier: "pro".into(),
    });
    limiter.set_config(config).unwrap();
    // The pro tier's 5 per hour, of which the free tier's requests spent two.
    assert_eq!(admitted(&mut client, "upgrading", 6).await, 3);
}

#[tokio::test]
async fn a_banned_address_is_refused_whatever_key_it_shows() {
    let limiter = Limiter::new(Config {
        keys: tiers(),
        ..Config::default()
    });
    let server = serve(&limiter).await;
    let mut client = http1_client(connect_from(15, server).await).await;
    assert_eq!(get_with_key(&mut client, "k").await, 200);
    limiter.ban(client_ip(15), Duration::from_secs(60));
    assert_eq!(get_with_key(&mut client, "k").await, 429);
    assert_eq!(get_with_key(&mut client, "another").await, 429);
    // A ban of a key refuses that key only.
    let mut neighbour = http1_client(connect_from(16, server).await).await;
    let key = RequestKey::new("k").client_key();
    limiter.ban_client(key, Duration::from_secs(60), BanReason::given("a test"));
    assert_eq!(get_with_key(&mut neighbour, "k").await, 429);
    assert_eq!(get_with_key(&mut neighbour, "other").await, 200);
    // An address of a banned network that was never seen before, with a key never seen.
    limiter.ban_network("127.0.0.18/32".parse().unwrap(), Duration::from_secs(60));
    let mut in_banned_network = http1_client(connect_from(18, server).await).await;
    assert_eq!(get_with_key(&mut in_banned_network, "fresh").await, 429);
}

#[test]
fn a_keyed_request_is_counted_under_its_key_and_its_address_while_it_lives() {
    let limiter = Limiter::new(Config {
        keys: KeyConfig {
            max_requests_per_address: 2,
            tiers: vec![Tier::new("one").max_requests(1)],
            default_tier: Some("one".into()),
            ..KeyConfig::default()
        },
        ..Config::default()
    });
    let ip = client_ip(17);
    let a = limiter
        .try_acquire_request_as(ip, &RequestKey::new("a"), "GET", "/")
        .unwrap();
    assert_eq!(a.client_key(), RequestKey::new("a").client_key());
    // The key's own in-flight limit.
    let again = limiter.try_acquire_request_as(ip, &RequestKey::new("a"), "GET", "/");
    assert!(again.is_err());
    let b = limiter
        .try_acquire_request_as(ip, &RequestKey::new("b"), "GET", "/")
        .unwrap();
    // The address's: two in flight, whatever the keys.
    let c = limiter.try_acquire_request_as(ip, &RequestKey::new("c"), "GET", "/");
    assert!(c.is_err());
    drop((a, b));
    let stats = limiter.stats();
    assert_eq!(stats.in_flight_requests, 0);
    assert!(limiter
        .try_acquire_request_as(ip, &RequestKey::new("c"), "GET", "/")
        .is_ok());
}

#[tokio::test]
async fn responses_tell_the_quota_in_ratelimit_headers_and_a_refusal_agrees_with_retry_after() {
    let limiter = Limiter::new(Config {
        max_requests_per_client: 2,
        request_rate: Some(
            RateLimit::new(3, Duration::from_secs(60))
                .strategy(tower_connlimit::rate::Strategy::TokenBucket),
        ),
        ..Config::default()
    });
    let app = Router::new().route("/", get(|| async { "ok" })).layer(
        ConnLimitLayer::with_limiter(limiter.clone())
            .keyed_by(KeySource::header("x-api-key".parse().unwrap()))
            .ratelimit_headers(),
    );
    let server = serve_with_connect_info(app).await;
    let mut client = http1_client(connect_from(19, server).await).await;
    let header = |headers: &http::HeaderMap, name: &str| headers[name].to_str().unwrap().to_owned();
    for left in [2, 1, 0] {
        let (status, headers, _) = h1_get(&mut client, "/").await;
        assert_eq!(status, 200);
        assert_eq!(
            header(&headers, "ratelimit-policy"),
            r#""requests";q=3;w=60, "concurrency";q=2;qu="concurrent-requests""#
        );
        let limit = header(&headers, "ratelimit");
        // This request is in flight while its headers are made: one of the two is taken.
        assert!(
            limit.starts_with(&format!("\"requests\";r={left};t="))
                && limit.ends_with(", \"concurrency\";r=1"),
            "{limit}"
        );
    }
    let (status, headers, _) = h1_get(&mut client, "/").await;
    assert_eq!(status, 429);
    let limit = header(&headers, "ratelimit");
    let t: u64 = limit["\"requests\";r=0;t=".len()..]
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let retry_after: u64 = header(&headers, "retry-after").parse().unwrap();
    assert!(
        (1..=20).contains(&t) && retry_after >= t,
        "t={t}, Retry-After: {retry_after}"
    );
    // Keyed requests are told their key's quota, which is whole.
    let mut request = get_request("/");
    request
        .headers_mut()
        .insert("x-api-key", "fresh-key".parse().unwrap());
    bounded(client.ready()).await.unwrap();
    let (status, headers, _) = collect(bounded(client.send_request(request)).await.unwrap()).await;
    assert_eq!(status, 200);
    assert!(header(&headers, "ratelimit").starts_with("\"requests\";r=2;"));
    // Without the option, no field at all.
    let plain = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(ConnLimitLayer::with_limiter(limiter.clone()));
    let plain_server = serve_with_connect_info(plain).await;
    let mut plain_client = http1_client(connect_from(20, plain_server).await).await;
    let (_, headers, _) = h1_get(&mut plain_client, "/").await;
    assert!(!headers.contains_key("ratelimit") && !headers.contains_key("ratelimit-policy"));
}

#[test]
fn check_request_spends_nothing_and_tells_what_the_decision_would() {
    let limiter = Limiter::new(Config {
        keys: tiers(),
        ..Config::default()
    });
    let ip = client_ip(21);
    let key = RequestKey::new("checked");
    for _ in 0..5 {
        let quota = limiter.check_request(ip, Some(&key), "GET", "/");
        assert!(quota.verdict.is_ok());
        assert_eq!(quota.rate.unwrap().remaining, 2, "free: 2, none spent");
    }
    assert_eq!(limiter.stats().tracked_clients, 0, "checking tracks nobody");
    let _a = limiter
        .try_acquire_request_as(ip, &key, "GET", "/")
        .unwrap();
    let _b = limiter
        .try_acquire_request_as(ip, &key, "GET", "/")
        .unwrap();
    let quota = limiter.check_request(ip, Some(&key), "GET", "/");
    let refused = quota.verdict.unwrap_err();
    assert_eq!(refused.reason(), tower_connlimit::RejectReason::RequestRate);
    assert_eq!(
        limiter
            .try_acquire_request_as(ip, &key, "GET", "/")
            .unwrap_err()
            .reason(),
        refused.reason(),
        "the decision agrees"
    );
    // An address never seen, in a banned network: refused by the check as by the decision.
    limiter.ban_network("127.0.0.22/32".parse().unwrap(), Duration::from_secs(60));
    let unseen = client_ip(22);
    let quota = limiter.check_request(unseen, Some(&RequestKey::new("other")), "GET", "/");
    let banned = tower_connlimit::RejectReason::Banned;
    assert_eq!(quota.verdict.unwrap_err().reason(), banned);
    assert_eq!(
        limiter
            .check_request(unseen, None, "GET", "/")
            .verdict
            .unwrap_err()
            .reason(),
        banned
    );
    assert_eq!(
        limiter.stats().tracked_clients,
        1,
        "the key alone (its address had nothing to count): checking tracks nobody"
    );
}
