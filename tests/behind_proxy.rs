//! Behind a reverse proxy, over real loopback sockets: 127.0.0.2 stands in for nginx (a trusted
//! proxy that keeps connections alive and names each client in `X-Forwarded-For`), other
//! 127.0.0.N peers reach the server directly. The stack is `examples/server.rs`'s: its routes
//! under a request-level `ConnLimitLayer`, served from a `ConnLimitListener` on the same
//! limiter. The configs are the tested examples in `examples/configs/`.
#![cfg(all(feature = "axum", feature = "serde", feature = "proxy-protocol"))]

#[path = "../examples/server.rs"]
#[allow(dead_code)]
mod server;
mod support;

use std::net::SocketAddr;

use hyper::client::conn::http1::SendRequest;
use tokio::io::AsyncWriteExt;
use tower_connlimit::{Config, ConnLimitLayer, Limiter, RejectReason};

use support::*;

const NGINX: u8 = 2;

/// The natural config behind nginx: a per-client cap well under what the proxy opens, the
/// client named by `X-Forwarded-For`, the proxy trusted; and a request rate, so that one
/// forwarded client's limits can be seen to hold.
fn behind_nginx() -> Config {
    Config::from_toml_str(include_str!("../examples/configs/behind-nginx.toml")).unwrap()
}

async fn serve(config: Config) -> (SocketAddr, Limiter) {
    let limiter = Limiter::try_new(config).unwrap();
    let app = server::routes()
        .layer(ConnLimitLayer::with_limiter(limiter.clone()))
        .with_state(limiter.clone());
    (serve_behind_listener(app, limiter.clone()).await, limiter)
}

/// `GET path` with `X-Forwarded-For: forwarded_for`, when given; the status and the body.
async fn get(
    sender: &mut SendRequest<http_body_util::Empty<bytes::Bytes>>,
    path: &str,
    forwarded_for: Option<&str>,
) -> (u16, String) {
    let mut request = http::Request::get(path).header(http::header::HOST, "localhost");
    if let Some(client) = forwarded_for {
        request = request.header("x-forwarded-for", client);
    }
    bounded(sender.ready()).await.unwrap();
    let response = bounded(sender.send_request(request.body(Default::default()).unwrap()))
        .await
        .unwrap();
    let (status, _, body) = collect(response).await;
    (status.as_u16(), body)
}

#[tokio::test]
async fn a_trusted_proxy_is_never_limited_as_a_client() {
    let (addr, limiter) = serve(behind_nginx()).await;
    // 30 keep-alive connections from the proxy, over the per-client cap of 20, each carrying
    // a client of its own: all served.
    let mut connections = Vec::new();
    for n in 0..30u8 {
        let mut sender = http1_client(connect_from(NGINX, addr).await).await;
        let client = format!("203.0.113.{}", n + 1);
        assert_eq!(
            get(&mut sender, "/ip", Some(&client)).await,
            (200, format!("{client}\n"))
        );
        connections.push(sender);
    }
    let proxy = limiter
        .client(client_ip(NGINX))
        .expect("the proxy's connections are counted");
    assert_eq!(proxy.open_connections, 30);
    // A forwarded client is still held to its own limits: its second request within the
    // minute is refused, on the same connection, while another client's is served.
    let (status, body) = get(&mut connections[0], "/", Some("203.0.113.1")).await;
    assert_eq!((status, body.as_str()), (429, "come back later"));
    assert_eq!(
        get(&mut connections[1], "/", Some("198.51.100.7")).await.0,
        200
    );
    let refused = limiter.stats().rejected;
    assert_eq!(refused.get(RejectReason::RequestRate.as_str()), Some(1));
    assert_eq!(
        refused.get(RejectReason::ClientConnections.as_str()),
        Some(0)
    );
}

#[tokio::test]
async fn the_ip_route_answers_the_client_the_limiter_counted() {
    let (addr, _limiter) = serve(behind_nginx()).await;
    // Through the trusted proxy: the client it names.
    let mut through = http1_client(connect_from(NGINX, addr).await).await;
    assert_eq!(
        get(&mut through, "/ip", Some("203.0.113.9")).await,
        (200, "203.0.113.9\n".to_owned())
    );
    // Directly, with a forged header: the peer.
    let mut direct = http1_client(connect_from(4, addr).await).await;
    assert_eq!(
        get(&mut direct, "/ip", Some("203.0.113.9")).await,
        (200, "127.0.0.4\n".to_owned())
    );
}

#[tokio::test]
async fn behind_a_cdn_the_client_is_two_hops_from_the_right() {
    let config =
        Config::from_toml_str(include_str!("../examples/configs/behind-cdn.toml")).unwrap();
    let (addr, limiter) = serve(config).await;
    let mut lb = http1_client(connect_from(NGINX, addr).await).await;
    // The client's own (spoofed) entry, the client as the edge saw it, the edge.
    let chain = "6.6.6.6, 203.0.113.20, 198.51.100.9";
    assert_eq!(
        get(&mut lb, "/ip", Some(chain)).await,
        (200, "203.0.113.20\n".to_owned())
    );
    assert_eq!(
        get(&mut lb, "/", Some(chain)).await.0,
        429,
        "the client's rate holds"
    );
    assert!(limiter.client("6.6.6.6".parse().unwrap()).is_none());
    assert!(limiter.client("198.51.100.9".parse().unwrap()).is_none());
}

#[tokio::test]
async fn behind_an_l4_balancer_the_proxy_header_names_the_client_at_accept() {
    let config = Config::from_toml_str(include_str!(
        "../examples/configs/behind-l4-proxy-protocol.toml"
    ))
    .unwrap();
    let (addr, limiter) = serve(config).await;
    let proxied = || async {
        let mut stream = connect_from(NGINX, addr).await;
        stream
            .write_all(b"PROXY TCP4 203.0.113.5 127.0.0.1 5555 80\r\n")
            .await
            .unwrap();
        stream
    };
    // The client's 10 connections, each answered with the client's address...
    let mut held = Vec::new();
    for _ in 0..10 {
        let mut sender = http1_client(proxied().await).await;
        assert_eq!(
            get(&mut sender, "/ip", None).await,
            (200, "203.0.113.5\n".to_owned())
        );
        held.push(sender);
    }
    assert_eq!(limiter.open_connections("203.0.113.5".parse().unwrap()), 10);
    // ...and its 11th refused at accept, though it came through the same balancer.
    let mut eleventh = proxied().await;
    assert!(was_refused(&mut eleventh).await);
    assert_eq!(
        limiter
            .stats()
            .rejected
            .get(RejectReason::ClientConnections.as_str()),
        Some(1)
    );
}
