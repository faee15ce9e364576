//! `ConnLimitLayer` at the make-service and request levels, over real loopback sockets.
#![cfg(feature = "axum")]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tower::{service_fn, Service, ServiceExt};
use tower_connlimit::{layer::ClientAddr, Config, ConnLimitLayer, Limiter};
use tower_layer::Layer;

use support::*;

fn limiter(config: Config) -> Limiter {
    Limiter::new(config)
}

fn per_client(max_conns_per_client: usize) -> Config {
    Config {
        max_conns_per_client,
        ..Config::default()
    }
}

/// `ConnLimitLayer` around axum's make-service with `ConnectInfo`.
async fn make_service_server(limiter: Limiter) -> SocketAddr {
    let app = Router::new().route("/", get(|| async { "hello" }));
    let make = ConnLimitLayer::with_limiter(limiter)
        .layer(app.into_make_service_with_connect_info::<SocketAddr>());
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(tcp, make).await.unwrap() });
    addr
}

#[tokio::test]
async fn make_service_refuses_with_429_and_connection_close() {
    let limiter = limiter(per_client(1));
    let server = make_service_server(limiter.clone()).await;
    let mut first = http1_client(connect_from(20, server).await).await;
    assert_eq!(h1_get(&mut first, "/").await.0, 200);
    assert_eq!(limiter.open_connections(client_ip(20)), 1);

    let mut second = http1_client(connect_from(20, server).await).await;
    let (status, headers, body) = h1_get(&mut second, "/").await;
    assert_eq!(status, 429);
    assert_eq!(headers["connection"], "close");
    assert_eq!(body, "too many requests");
    // The refused connection is closed by the server after its one answer.
    assert!(bounded(second.ready()).await.is_err());

    // The admitted connection keeps working, and other clients are unaffected.
    assert_eq!(h1_get(&mut first, "/").await.0, 200);
    let mut other = http1_client(connect_from(21, server).await).await;
    assert_eq!(h1_get(&mut other, "/").await.0, 200);
}

#[tokio::test]
async fn make_service_refuses_over_the_global_cap_with_503() {
    let limiter = limiter(Config {
        max_conns_per_client: 0,
        max_conns_total: 1,
        ..Config::default()
    });
    let server = make_service_server(limiter.clone()).await;
    let mut first = http1_client(connect_from(22, server).await).await;
    assert_eq!(h1_get(&mut first, "/").await.0, 200);
    let mut second = http1_client(connect_from(23, server).await).await;
    let (status, headers, body) = h1_get(&mut second, "/").await;
    assert_eq!(status, 503);
    assert_eq!(headers["connection"], "close");
    assert_eq!(body, "server busy");
    assert_eq!(limiter.stats().rejected["total_connections"], 1);
}

#[tokio::test]
async fn make_service_releases_on_client_disconnect() {
    let limiter = limiter(per_client(1));
    let server = make_service_server(limiter.clone()).await;
    let mut client = http1_client(connect_from(24, server).await).await;
    assert_eq!(h1_get(&mut client, "/").await.0, 200);
    drop(client);
    wait_until("the disconnected client is released", || {
        limiter.stats().tracked_clients == 0
    })
    .await;
    let mut again = http1_client(connect_from(24, server).await).await;
    assert_eq!(h1_get(&mut again, "/").await.0, 200);
}

#[tokio::test]
async fn a_hyper_util_loop_with_socket_addr_targets() {
    let limiter = limiter(Config {
        max_conns_per_client: 1,
        max_requests_per_client: 5,
        ..Config::default()
    });
    // The inner per-connection service is itself request-limited: it finds the client through
    // the `ClientAddr` the make-service level inserts.
    let request_layer = ConnLimitLayer::with_limiter(limiter.clone());
    let make = ConnLimitLayer::with_limiter(limiter.clone()).layer(service_fn(
        move |_peer: SocketAddr| {
            let request_layer = request_layer.clone();
            async move {
                Ok::<_, Infallible>(request_layer.layer(service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let peer = req.extensions().get::<ClientAddr>().unwrap().0;
                        Ok::<_, Infallible>(http::Response::new(Body::from(peer.to_string())))
                    },
                )))
            }
        },
    ));
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = tcp.local_addr().unwrap();
    tokio::spawn(async move {
        let mut make = make;
        while let Ok((stream, peer)) = tcp.accept().await {
            let service = make.ready().await.unwrap().call(peer).await.unwrap();
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                    .await;
            });
        }
    });

    let stream = connect_from(25, server).await;
    let local = stream.local_addr().unwrap();
    let mut first = http1_client(stream).await;
    let (status, _, body) = h1_get(&mut first, "/").await;
    assert_eq!((status.as_u16(), body), (200, local.to_string()));
    assert_eq!(limiter.stats().admitted_requests, 1);

    let mut second = http1_client(connect_from(25, server).await).await;
    assert_eq!(h1_get(&mut second, "/").await.0, 429);
}

/// An axum app with the request-level layer; `/hold` waits for a permit from `gate` (so tests
/// control exactly how long requests stay in flight), `/stream` streams a body from a channel.
struct RequestServer {
    addr: SocketAddr,
    limiter: Limiter,
    gate: Arc<Semaphore>,
    chunks: mpsc::Sender<mpsc::Receiver<Bytes>>,
}

async fn panicking_handler() -> &'static str {
    panic!("handler panic")
}

async fn request_server(max_requests_per_client: usize, with_connect_info: bool) -> RequestServer {
    let layer = ConnLimitLayer::new(Config {
        max_requests_per_client,
        ..Config::default()
    });
    let limiter = layer.limiter().clone();
    let gate = Arc::new(Semaphore::new(0));
    let (chunks, chunk_streams) = mpsc::channel::<mpsc::Receiver<Bytes>>(4);
    let chunk_streams = Arc::new(tokio::sync::Mutex::new(chunk_streams));
    let hold_gate = Arc::clone(&gate);
    let app = Router::new()
        .route("/", get(|| async { "hello" }))
        .route(
            "/hold",
            get(move || async move {
                hold_gate.acquire().await.unwrap().forget();
                "released"
            }),
        )
        .route(
            "/stream",
            get(move || async move {
                let rx = chunk_streams.lock().await.recv().await.unwrap();
                let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                    rx.recv()
                        .await
                        .map(|chunk| (Ok::<_, Infallible>(chunk), rx))
                });
                Body::from_stream(stream)
            }),
        )
        .route("/panic", get(panicking_handler))
        .layer(layer);
    let addr = if with_connect_info {
        serve_behind_listener(app, limiter.clone()).await
    } else {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(tcp, app).await.unwrap() });
        addr
    };
    RequestServer {
        addr,
        limiter,
        gate,
        chunks,
    }
}

#[tokio::test]
async fn in_flight_limit_holds_on_one_http2_connection() {
    let server = request_server(2, true).await;
    let h2 = http2_client(connect_from(30, server.addr).await).await;
    let send = |path: &'static str| {
        let mut h2 = h2.clone();
        tokio::spawn(async move {
            let response = h2.send_request(get_request(path)).await.unwrap();
            collect(response).await
        })
    };
    let held = [send("/hold"), send("/hold")];
    wait_until("two requests are in flight", || {
        server.limiter.stats().in_flight_requests == 2
    })
    .await;
    let (status, headers, body) = bounded(send("/")).await.unwrap();
    assert_eq!(status, 429);
    assert_eq!(body, "too many requests");
    assert!(headers.get("connection").is_none());
    assert_eq!(server.limiter.stats().rejected["client_requests"], 1);

    // Another client is not limited by this one's requests.
    let mut other = http1_client(connect_from(31, server.addr).await).await;
    assert_eq!(h1_get(&mut other, "/").await.0, 200);

    server.gate.add_permits(2);
    for request in held {
        assert_eq!(bounded(request).await.unwrap().0, 200);
    }
    wait_until("the finished requests are released", || {
        server.limiter.stats().in_flight_requests == 0
    })
    .await;
    assert_eq!(bounded(send("/")).await.unwrap().0, 200);
}

#[tokio::test]
async fn the_request_permit_lives_until_the_body_ends() {
    let server = request_server(1, true).await;
    let (chunk_tx, chunk_rx) = mpsc::channel(4);
    server.chunks.send(chunk_rx).await.unwrap();
    let mut client = http1_client(connect_from(32, server.addr).await).await;
    let response = bounded(client.send_request(get_request("/stream")))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();

    chunk_tx
        .send(Bytes::from_static(b"part one"))
        .await
        .unwrap();
    let frame = bounded(body.frame()).await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "part one");
    // Headers and a first chunk are out, but the response is still streaming: still in flight.
    assert_eq!(server.limiter.stats().in_flight_requests, 1);
    let mut other = http1_client(connect_from(32, server.addr).await).await;
    assert_eq!(h1_get(&mut other, "/").await.0, 429);

    drop(chunk_tx);
    assert!(bounded(body.frame()).await.is_none());
    wait_until("the ended body releases its request", || {
        server.limiter.stats().in_flight_requests == 0
    })
    .await;
    assert_eq!(h1_get(&mut other, "/").await.0, 200);
}

#[tokio::test]
async fn a_request_without_a_client_address_gets_500_not_a_pass() {
    let server = request_server(1, false).await;
    let mut client = http1_client(connect_from(33, server.addr).await).await;
    for _ in 0..2 {
        let (status, _, body) = h1_get(&mut client, "/").await;
        assert_eq!(status, 500);
        assert_eq!(body, "internal server error");
    }
    let stats = server.limiter.stats();
    assert_eq!(stats.rejected["no_client_address"], 2);
    assert_eq!(stats.admitted_requests, 0);
}

#[tokio::test]
async fn a_handler_panic_releases_request_and_connection() {
    let server = request_server(1, true).await;
    let mut client = http1_client(connect_from(34, server.addr).await).await;
    bounded(client.ready()).await.unwrap();
    // The panic kills the connection's task; the client sees the connection end.
    assert!(bounded(client.send_request(get_request("/panic")))
        .await
        .is_err());
    wait_until(
        "the panicked request and its connection are released",
        || {
            let stats = server.limiter.stats();
            stats.in_flight_requests == 0
                && stats.open_connections == 0
                && stats.tracked_clients == 0
        },
    )
    .await;
    assert_eq!(server.limiter.stats().admitted_requests, 1);
}

#[tokio::test]
async fn a_cancelled_request_releases_its_permit() {
    let server = request_server(1, true).await;
    let h2 = http2_client(connect_from(35, server.addr).await).await;
    let mut sender = h2.clone();
    let pending = tokio::spawn(async move { sender.send_request(get_request("/hold")).await });
    wait_until("the request is in flight", || {
        server.limiter.stats().in_flight_requests == 1
    })
    .await;
    // Dropping the response future resets the h2 stream; hyper drops the handler's future.
    pending.abort();
    wait_until("the cancelled request is released", || {
        server.limiter.stats().in_flight_requests == 0
    })
    .await;
    let mut h2 = h2;
    let response = bounded(h2.send_request(get_request("/"))).await.unwrap();
    assert_eq!(collect(response).await.0, 200);

    // A client that vanishes with an HTTP/1 request in flight is released as well.
    let mut raw = connect_from(36, server.addr).await;
    raw.write_all(b"GET /hold HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    wait_until("the h1 request is in flight", || {
        server
            .limiter
            .client(client_ip(36))
            .is_some_and(|c| c.in_flight_requests == 1)
    })
    .await;
    drop(raw);
    wait_until("the vanished client is released", || {
        server.limiter.client(client_ip(36)).is_none()
    })
    .await;
}

#[tokio::test]
async fn one_layer_applied_per_route_shares_one_limiter() {
    // `Router::layer` calls `Layer::layer` once per route; the counts must still be shared.
    let server = request_server(1, true).await;
    let h2 = http2_client(connect_from(37, server.addr).await).await;
    let mut sender = h2.clone();
    let held = tokio::spawn(async move {
        let response = sender.send_request(get_request("/hold")).await.unwrap();
        collect(response).await
    });
    wait_until("the /hold request is in flight", || {
        server.limiter.stats().in_flight_requests == 1
    })
    .await;
    let mut h2 = h2;
    let response = bounded(h2.send_request(get_request("/"))).await.unwrap();
    assert_eq!(
        collect(response).await.0,
        429,
        "a different route shares the count"
    );
    server.gate.add_permits(1);
    assert_eq!(bounded(held).await.unwrap().0, 200);
}

/// A make-service level in front of a trivial per-connection service, driven with fabricated
/// targets: IPv6 keying needs no IPv6 network.
async fn admitted(
    make: &mut tower_connlimit::layer::ConnLimit<
        impl Service<SocketAddr, Response = (), Error = Infallible>,
    >,
    peer: &str,
) -> tower_connlimit::layer::LimitedConnection<()> {
    let peer: SocketAddr = peer.parse().unwrap();
    make.ready().await.unwrap().call(peer).await.unwrap()
}

#[tokio::test]
async fn make_service_keys_ipv6_targets_by_prefix() {
    let layer = ConnLimitLayer::new(per_client(1));
    let mut make = layer.layer(service_fn(|_: SocketAddr| async {
        Ok::<_, Infallible>(())
    }));
    let first = admitted(&mut make, "[2001:db8:0:1::1]:4000").await;
    assert!(first.is_admitted());
    // Same /64, other address and port: the same client.
    assert!(!admitted(&mut make, "[2001:db8:0:1::ffff]:4001")
        .await
        .is_admitted());
    // Another /64 is another client.
    let other = admitted(&mut make, "[2001:db8:0:2::1]:4000").await;
    assert!(other.is_admitted());
    // An IPv4-mapped address is its IPv4 address.
    let v4 = admitted(&mut make, "192.0.2.1:4000").await;
    assert!(v4.is_admitted());
    assert!(!admitted(&mut make, "[::ffff:192.0.2.1]:4000")
        .await
        .is_admitted());

    let limiter = layer.limiter();
    assert_eq!(limiter.stats().open_connections, 3);
    assert_eq!(limiter.stats().rejected["client_connections"], 2);
    drop((first, other, v4));
    assert_eq!(limiter.stats().open_connections, 0);
    limiter.purge_expired();
    assert_eq!(limiter.stats().tracked_clients, 0);
}

#[tokio::test]
async fn a_connection_stays_counted_while_any_clone_of_its_service_lives() {
    let layer = ConnLimitLayer::new(per_client(1));
    let mut make = layer.layer(service_fn(|_: SocketAddr| async {
        Ok::<_, Infallible>(())
    }));
    let connection = admitted(&mut make, "192.0.2.9:1").await;
    let per_request_clone = connection.clone();
    drop(connection);
    assert_eq!(
        layer
            .limiter()
            .open_connections("192.0.2.9".parse().unwrap()),
        1
    );
    drop(per_request_clone);
    assert_eq!(
        layer
            .limiter()
            .open_connections("192.0.2.9".parse().unwrap()),
        0
    );
}

#[tokio::test]
async fn a_bare_router_under_the_layer_is_a_limited_make_service() {
    // `axum::serve(listener, layer.layer(router))`: the router is its own make-service.
    let limiter = limiter(per_client(1));
    let app = Router::new().route("/", get(|| async { "hello" }));
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = tcp.local_addr().unwrap();
    let make = ConnLimitLayer::with_limiter(limiter.clone()).layer(app);
    tokio::spawn(async move { axum::serve(tcp, make).await.unwrap() });
    let mut first = http1_client(connect_from(38, server).await).await;
    assert_eq!(h1_get(&mut first, "/").await.0, 200);
    let mut second = http1_client(connect_from(38, server).await).await;
    assert_eq!(h1_get(&mut second, "/").await.0, 429);
}
