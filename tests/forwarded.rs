//! Client addresses from trusted proxies' request headers, at the request-level layer, over real
//! loopback sockets: 127.0.0.2 is the trusted proxy, other 127.0.0.N peers are not.
#![cfg(feature = "axum")]

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::http1::SendRequest;
use tokio::sync::Semaphore;
use tower_connlimit::{
    client_ip::ClientIpConfig, client_ip::ClientIpHeader, client_ip::Unidentified, Config,
    ConnLimitLayer, Limiter, RateLimit,
};

use support::*;

const PROXY: u8 = 2;

struct Server {
    addr: SocketAddr,
    limiter: Limiter,
    gate: Arc<Semaphore>,
}

/// An axum app with the request layer allowing one request in flight per client; `/hold` stays
/// in flight until the test adds a permit to `gate`.
async fn server(header: ClientIpHeader, trusted_hops: usize) -> Server {
    server_with(Config {
        max_requests_per_client: 1,
        client_ip: ClientIpConfig {
            header,
            trusted_hops,
            ..ClientIpConfig::default()
        },
        ..Config::default()
    })
    .await
}

/// The same app on `config`, with 127.0.0.2 as its trusted proxy.
async fn server_with(config: Config) -> Server {
    let layer = ConnLimitLayer::new(Config {
        trusted_proxies: vec!["127.0.0.2/32".parse().unwrap()],
        ..config
    });
    let limiter = layer.limiter().clone();
    let gate = Arc::new(Semaphore::new(0));
    let hold = Arc::clone(&gate);
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .route(
            "/hold",
            get(move || async move {
                hold.acquire().await.unwrap().forget();
                "released"
            }),
        )
        .layer(layer);
    Server {
        addr: serve_with_connect_info(app).await,
        limiter,
        gate,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Sends `GET path` with the given headers on a fresh connection from 127.0.0.n; returns the
/// sender, so a held request's connection stays open, and the response future's task.
async fn send(
    n: u8,
    server: &Server,
    path: &str,
    headers: &[(&str, &str)],
) -> (
    SendRequest<Empty<Bytes>>,
    tokio::task::JoinHandle<(u16, String)>,
) {
    let mut sender = http1_client(connect_from(n, server.addr).await).await;
    let mut request = http::Request::get(path).header(http::header::HOST, "localhost");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    bounded(sender.ready()).await.unwrap();
    let response = sender.send_request(request.body(Empty::new()).unwrap());
    let task = tokio::spawn(async move {
        let (status, _, body) = collect(bounded(response).await.unwrap()).await;
        (status.as_u16(), body)
    });
    (sender, task)
}

async fn status_of(n: u8, server: &Server, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let (_sender, task) = send(n, server, path, headers).await;
    bounded(task).await.unwrap()
}

fn in_flight(limiter: &Limiter, client: &str) -> usize {
    limiter
        .client(ip(client))
        .map_or(0, |c| c.in_flight_requests)
}

#[tokio::test]
async fn x_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let server = server(ClientIpHeader::XForwardedFor, 1).await;
    let (_held, task) = send(3, &server, "/hold", &[("x-forwarded-for", "203.0.113.7")]).await;
    wait_until("the request is in flight", || {
        in_flight(&server.limiter, "127.0.0.3") == 1
    })
    .await;
    assert_eq!(in_flight(&server.limiter, "203.0.113.7"), 0);
    assert!(server.limiter.client(ip("203.0.113.7")).is_none());

    // Claiming to be someone else does not buy the untrusted peer a second slot.
    let (status, _) = status_of(3, &server, "/", &[("x-forwarded-for", "198.51.100.1")]).await;
    assert_eq!(status, 429);

    server.gate.add_permits(1);
    assert_eq!(bounded(task).await.unwrap(), (200, "released".to_owned()));
}

#[tokio::test]
async fn x_forwarded_for_from_the_trusted_proxy_names_the_client_from_the_right() {
    let server = server(ClientIpHeader::XForwardedFor, 1).await;
    // The client sent its own (spoofed) entry; the proxy appended the real address.
    let (_held, task) = send(
        PROXY,
        &server,
        "/hold",
        &[("x-forwarded-for", "6.6.6.6, 203.0.113.7")],
    )
    .await;
    wait_until("the request is in flight", || {
        in_flight(&server.limiter, "203.0.113.7") == 1
    })
    .await;
    assert!(server.limiter.client(ip("6.6.6.6")).is_none());
    assert!(server.limiter.client(client_ip(PROXY)).is_none());

    // Another client behind the same proxy is not held up by the first one's limit...
    let other = status_of(PROXY, &server, "/", &[("x-forwarded-for", "203.0.113.8")]).await;
    assert_eq!(other, (200, "ok".to_owned()));
    // ...while the same client, whatever it puts on the left, is.
    let again = status_of(
        PROXY,
        &server,
        "/",
        &[("x-forwarded-for", "198.51.100.1, 203.0.113.7")],
    )
    .await;
    assert_eq!(again.0, 429);

    server.gate.add_permits(1);
    assert_eq!(bounded(task).await.unwrap(), (200, "released".to_owned()));
    wait_until("the limiter forgets everyone", || {
        server.limiter.stats().tracked_clients == 0
    })
    .await;
}

#[tokio::test]
async fn forwarded_and_x_real_ip_follow_the_same_trust_rules() {
    let forwarded = server(ClientIpHeader::Forwarded, 2).await;
    // Two trusted hops: the client is second from the right.
    let header = r#"for=6.6.6.6, for="[2001:db8::7]:4711";proto=https, for=10.0.0.9"#;
    let (_held, task) = send(PROXY, &forwarded, "/hold", &[("forwarded", header)]).await;
    wait_until("the request is in flight", || {
        in_flight(&forwarded.limiter, "2001:db8::7") == 1
    })
    .await;
    forwarded.gate.add_permits(1);
    bounded(task).await.unwrap();

    let real_ip = server(ClientIpHeader::XRealIp, 1).await;
    let (_held, task) = send(PROXY, &real_ip, "/hold", &[("x-real-ip", "203.0.113.9")]).await;
    wait_until("the request is in flight", || {
        in_flight(&real_ip.limiter, "203.0.113.9") == 1
    })
    .await;
    // From an untrusted peer the same header is ignored.
    let (_held2, task2) = send(4, &real_ip, "/hold", &[("x-real-ip", "203.0.113.9")]).await;
    wait_until("the untrusted request is in flight", || {
        in_flight(&real_ip.limiter, "127.0.0.4") == 1
    })
    .await;
    real_ip.gate.add_permits(2);
    bounded(task).await.unwrap();
    bounded(task2).await.unwrap();
}

/// The request headers a trusted proxy may send that name no usable client, for `header` read
/// with `hops` trusted hops: none at all, garbage, `unknown`, an obfuscated name, a duplicated
/// `for=`, an escaped address, an IPv6 zone, and fewer entries than `hops`.
fn unusable(header: ClientIpHeader, hops: usize) -> Vec<Vec<(&'static str, &'static str)>> {
    let mut forms = vec![vec![]];
    match header {
        ClientIpHeader::XForwardedFor => {
            for value in [
                "garbage",
                "unknown",
                "_hidden",
                "fe80::1%eth0",
                "203.0.113.7:x",
                "",
            ] {
                forms.push(vec![("x-forwarded-for", value)]);
            }
        }
        ClientIpHeader::Forwarded => {
            for value in [
                "for=garbage",
                "for=unknown",
                "for=_hidden",
                "for=203.0.113.7;for=203.0.113.8",
                r#"for="203.0.113\.7""#,
                r#"for="[fe80::1%25eth0]""#,
                "proto=https",
                "for",
            ] {
                forms.push(vec![("forwarded", value)]);
            }
        }
        _ => unreachable!("list headers only"),
    }
    if hops > 1 {
        // One entry where `hops` are expected: a proxy is missing.
        let name = match header {
            ClientIpHeader::Forwarded => "forwarded",
            _ => "x-forwarded-for",
        };
        let one = if name == "forwarded" {
            "for=203.0.113.7"
        } else {
            "203.0.113.7"
        };
        forms.push(vec![(name, one)]);
    }
    forms
}

#[tokio::test]
async fn requests_naming_no_usable_client_are_held_to_the_proxys_own_limits() {
    for (header, hops) in [
        (ClientIpHeader::XForwardedFor, 1),
        (ClientIpHeader::XForwardedFor, 2),
        (ClientIpHeader::Forwarded, 1),
        (ClientIpHeader::Forwarded, 2),
    ] {
        let allowance = 3;
        let server = server_with(Config {
            request_rate: Some(RateLimit::new(
                allowance,
                std::time::Duration::from_secs(3600),
            )),
            client_ip: ClientIpConfig {
                header,
                trusted_hops: hops,
                ..ClientIpConfig::default()
            },
            ..Config::default()
        })
        .await;
        let forms = unusable(header, hops);
        // The proxy's own allowance goes first, to requests that name nobody...
        for _ in 0..allowance {
            let (status, _) = status_of(PROXY, &server, "/", &[]).await;
            assert_eq!(
                status, 200,
                "{header} hops {hops}: within the proxy's own rate"
            );
        }
        // ...and then no form of naming nobody gets a request past it.
        for form in &forms {
            let (status, _) = status_of(PROXY, &server, "/", form).await;
            assert_eq!(
                status, 429,
                "{header} hops {hops}: {form:?} escaped the rate"
            );
        }
        let stats = server.limiter.stats();
        assert_eq!(
            stats.unidentified_requests,
            (allowance as usize + forms.len()) as u64,
            "{header} hops {hops}: every one counted as unidentified"
        );
        assert_eq!(stats.rejected["request_rate"], forms.len() as u64);
        // A client the proxy does name keeps its own allowance.
        let named = match (header, hops) {
            (ClientIpHeader::Forwarded, 1) => ("forwarded", "for=203.0.113.9"),
            (ClientIpHeader::Forwarded, _) => ("forwarded", "for=203.0.113.9, for=10.0.0.1"),
            (_, 1) => ("x-forwarded-for", "203.0.113.9"),
            _ => ("x-forwarded-for", "203.0.113.9, 10.0.0.1"),
        };
        let (status, _) = status_of(PROXY, &server, "/", &[named]).await;
        assert_eq!(status, 200, "{header} hops {hops}: a named client");
        assert_eq!(
            server.limiter.stats().unidentified_requests,
            stats.unidentified_requests
        );
    }
}

#[tokio::test]
async fn the_proxys_unidentified_requests_count_against_its_in_flight_limit() {
    let server = server(ClientIpHeader::XForwardedFor, 1).await;
    let (_held, task) = send(PROXY, &server, "/hold", &[("x-forwarded-for", "garbage")]).await;
    wait_until("the request is in flight under the proxy", || {
        in_flight(&server.limiter, "127.0.0.2") == 1
    })
    .await;
    for form in unusable(ClientIpHeader::XForwardedFor, 1) {
        let (status, _) = status_of(PROXY, &server, "/", &form).await;
        assert_eq!(status, 429, "{form:?} passed the in-flight limit");
    }
    // The proxy's connections are still not capped, nor its named clients held up.
    let (status, _) = status_of(PROXY, &server, "/", &[("x-forwarded-for", "203.0.113.7")]).await;
    assert_eq!(status, 200);
    server.gate.add_permits(1);
    assert_eq!(bounded(task).await.unwrap(), (200, "released".to_owned()));
}

#[tokio::test]
async fn with_refuse_requests_naming_no_usable_client_get_400() {
    let server = server_with(Config {
        client_ip: ClientIpConfig {
            header: ClientIpHeader::Forwarded,
            unidentified: Unidentified::Refuse,
            ..ClientIpConfig::default()
        },
        ..Config::default()
    })
    .await;
    let forms = unusable(ClientIpHeader::Forwarded, 1);
    for form in &forms {
        let (status, body) = status_of(PROXY, &server, "/", form).await;
        assert_eq!(status, 400, "{form:?}");
        assert!(
            !body.contains("proxy"),
            "the answer names no rule: {body:?}"
        );
    }
    let (status, _) = status_of(PROXY, &server, "/", &[("forwarded", "for=203.0.113.7")]).await;
    assert_eq!(status, 200, "a named client is served");
    // A peer that is no proxy sends what it likes: its headers are not read at all.
    let (status, _) = status_of(5, &server, "/", &[("forwarded", "for=unknown")]).await;
    assert_eq!(status, 200);
    let stats = server.limiter.stats();
    assert_eq!(stats.rejected["client_unidentified"], forms.len() as u64);
    assert_eq!(stats.unidentified_requests, forms.len() as u64);
}
