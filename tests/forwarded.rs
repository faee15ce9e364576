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
use tower_connlimit::{ClientIpConfig, ClientIpHeader, Config, ConnLimitLayer, Limiter};

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
    let layer = ConnLimitLayer::new(Config {
        max_requests_per_client: 1,
        client_ip: ClientIpConfig {
            header,
            trusted_hops,
        },
        trusted_proxies: vec!["127.0.0.2/32".parse().unwrap()],
        ..Config::default()
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
