//! Graceful shutdown: permits are released as connections drain, at every admission point, and a
//! hard deadline after a graceful one releases the rest.
//!
//! Each drain test runs one scenario against a different server set-up:
//!
//! - client A (`base`): an HTTP/1 request in flight;
//! - client B (`base + 1`): an idle HTTP/1 keep-alive connection that has had one answer;
//! - client C (`base + 2`): both, on two connections;
//! - client D (`base + 3`): an HTTP/2 connection with one stream in flight.
//!
//! In-flight requests wait on a oneshot the test holds (never on a timer). On shutdown, the idle
//! connections must be closed by the server and released at once, while the in-flight ones stay
//! counted until the test lets each answer; then the server's future returns and nothing is left.
#![cfg(feature = "axum")]

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tower::{service_fn, ServiceBuilder};
use tower_connlimit::{Config, ConnLimitLayer, ConnLimitListener, Limiter};
use tower_layer::Layer;

use support::*;

/// How long the hard-deadline tests let a graceful drain run before giving up on it.
const GRACE: Duration = Duration::from_millis(200);

/// A request in flight, parked until the test fires `release`.
struct Held {
    peer: IpAddr,
    release: oneshot::Sender<()>,
}

type Arrivals = mpsc::UnboundedSender<Held>;

/// The slow handler: tells the test it is running, then waits for the test to release it.
async fn hold(arrivals: Arrivals, peer: IpAddr) -> String {
    let (release, released) = oneshot::channel();
    arrivals
        .send(Held { peer, release })
        .expect("the test is listening for held requests");
    // A dropped sender also ends the wait; the tests never drop one before the server is gone.
    let _ = released.await;
    format!("released {peer}")
}

/// Limits that every scenario fits exactly: client C holds two connections and, at most, one
/// request at a time.
fn limiter() -> Limiter {
    Limiter::new(Config {
        max_conns_per_client: 2,
        max_requests_per_client: 1,
        ..Config::default()
    })
}

/// `/` answers at once, `/slow` is held; the request level counts in-flight requests.
fn axum_app(limiter: &Limiter, arrivals: Arrivals) -> Router {
    Router::new()
        .route("/", get(|| async { "hello" }))
        .route(
            "/slow",
            get(move |ConnectInfo(peer): ConnectInfo<SocketAddr>| {
                hold(arrivals.clone(), peer.ip())
            }),
        )
        .layer(ConnLimitLayer::with_limiter(limiter.clone()))
}

/// A server under test: where it listens, its limiter, the requests it holds, how to stop it,
/// and its task, which ends when the server's (graceful) future returns.
struct Server {
    addr: SocketAddr,
    limiter: Limiter,
    arrivals: mpsc::UnboundedReceiver<Held>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// The shutdown signal the servers wait on: the test firing (or dropping) `stop`.
async fn signal(stop: oneshot::Receiver<()>) {
    let _ = stop.await;
}

/// `axum::serve` over `ConnLimitListener::for_axum()`, with graceful shutdown.
async fn axum_listener_server() -> Server {
    let limiter = limiter();
    let (arrivals_tx, arrivals) = mpsc::unbounded_channel();
    let (stop, stop_rx) = oneshot::channel();
    let app = axum_app(&limiter, arrivals_tx);
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = ConnLimitListener::new(tcp, limiter.clone()).for_axum();
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(signal(stop_rx))
        .await
        .unwrap();
    });
    Server {
        addr,
        limiter,
        arrivals,
        stop,
        task,
    }
}

/// `axum::serve` over a bare `TcpListener`, with `ConnLimitLayer` around the make-service, with
/// graceful shutdown.
async fn axum_make_service_server() -> Server {
    let limiter = limiter();
    let (arrivals_tx, arrivals) = mpsc::unbounded_channel();
    let (stop, stop_rx) = oneshot::channel();
    let make_service = ConnLimitLayer::with_limiter(limiter.clone())
        .layer(axum_app(&limiter, arrivals_tx).into_make_service_with_connect_info::<SocketAddr>());
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(tcp, make_service)
            .with_graceful_shutdown(signal(stop_rx))
            .await
            .unwrap();
    });
    Server {
        addr,
        limiter,
        arrivals,
        stop,
        task,
    }
}

/// A hyper-util accept loop: connections from `ConnLimitListener::accept()`, served by
/// `auto::Builder` (HTTP/1 and HTTP/2) and watched by `GracefulShutdown`, with the request-level
/// layer finding the client in a `SocketAddr` extension. The connection tasks live in a
/// `JoinSet` owned by the server task, so aborting the server task drops every connection.
async fn hyper_server() -> Server {
    let limiter = limiter();
    let (arrivals_tx, arrivals) = mpsc::unbounded_channel();
    let (stop, mut stop_rx) = oneshot::channel::<()>();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let mut listener = ConnLimitListener::new(tcp, limiter.clone());
    let request_layer = ConnLimitLayer::with_limiter(limiter.clone());
    let app = service_fn(move |request: http::Request<Incoming>| {
        let arrivals = arrivals_tx.clone();
        async move {
            let peer = request
                .extensions()
                .get::<SocketAddr>()
                .expect("the accept loop inserts the peer")
                .ip();
            let body = match request.uri().path() {
                "/slow" => hold(arrivals, peer).await,
                _ => "hello".to_owned(),
            };
            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(body))))
        }
    });
    let task = tokio::spawn(async move {
        let graceful = GracefulShutdown::new();
        let builder = auto::Builder::new(TokioExecutor::new());
        let mut connections = JoinSet::new();
        // Ends at the stop signal; an accept error fails the test.
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (io, peer) = accepted.expect("accept failed");
                    let service = ServiceBuilder::new()
                        .map_request(move |mut request: http::Request<Incoming>| {
                            request.extensions_mut().insert(peer);
                            request
                        })
                        .layer(request_layer.clone())
                        .service(app.clone());
                    let connection = builder
                        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
                        .into_owned();
                    let connection = graceful.watch(connection);
                    connections.spawn(async move {
                        let _ = connection.await;
                    });
                }
                Some(_) = connections.join_next() => {}
                _ = &mut stop_rx => break,
            }
        }
        drop(listener);
        graceful.shutdown().await;
    });
    Server {
        addr,
        limiter,
        arrivals,
        stop,
        task,
    }
}

/// The limiter's totals, and `(open connections, in-flight requests)` of each scenario client,
/// `None` for a client the limiter no longer tracks.
#[derive(Debug, PartialEq, Eq)]
struct Counts {
    open: usize,
    in_flight: usize,
    tracked: usize,
    clients: Vec<Option<(usize, usize)>>,
}

impl Counts {
    fn of(limiter: &Limiter, clients: &[u8]) -> Counts {
        let stats = limiter.stats();
        Counts {
            open: stats.open_connections,
            in_flight: stats.in_flight_requests,
            // The clients with something open or remembered (drained ones wait for a sweep).
            tracked: limiter.clients().len(),
            clients: clients
                .iter()
                .map(|&n| {
                    limiter
                        .client(client_ip(n))
                        .map(|c| (c.open_connections, c.in_flight_requests))
                })
                .collect(),
        }
    }
}

/// Waits until the counts are exactly `expected` (they change as the server's tasks run), then
/// asserts them.
async fn settle(
    limiter: &Limiter,
    clients: &[u8],
    open: usize,
    in_flight: usize,
    tracked: usize,
    per_client: &[Option<(usize, usize)>],
) {
    let expected = Counts {
        open,
        in_flight,
        tracked,
        clients: per_client.to_vec(),
    };
    wait_until(&format!("the limiter counts {expected:?}"), || {
        Counts::of(limiter, clients) == expected
    })
    .await;
    assert_eq!(Counts::of(limiter, clients), expected);
}

/// Sends `GET path` on a raw HTTP/1.1 connection.
async fn send_get(stream: &mut TcpStream, path: &str) {
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n");
    bounded(stream.write_all(request.as_bytes())).await.unwrap();
}

/// Opens an HTTP/1.1 connection from client `n`, has `/` answered on it, and leaves it idle.
async fn idle_connection(n: u8, server: SocketAddr) -> TcpStream {
    let mut stream = connect_from(n, server).await;
    send_get(&mut stream, "/").await;
    let response = read_response(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with("\r\n\r\nhello"), "{response}");
    stream
}

/// Opens an HTTP/1.1 connection from client `n` and sends `GET /slow` on it.
async fn slow_request(n: u8, server: SocketAddr) -> TcpStream {
    let mut stream = connect_from(n, server).await;
    send_get(&mut stream, "/slow").await;
    stream
}

/// Waits until the server holds a request from each of `clients`; returns their release handles.
async fn held_requests(
    arrivals: &mut mpsc::UnboundedReceiver<Held>,
    clients: &[u8],
) -> HashMap<IpAddr, oneshot::Sender<()>> {
    let mut held = HashMap::new();
    for _ in clients {
        let request = bounded(arrivals.recv()).await.expect("server is running");
        assert!(held.insert(request.peer, request.release).is_none());
    }
    let mut peers: Vec<IpAddr> = held.keys().copied().collect();
    peers.sort();
    let expected: Vec<IpAddr> = clients.iter().map(|&n| client_ip(n)).collect();
    assert_eq!(peers, expected);
    held
}

/// Asserts that the server closes `stream` without sending anything more (a read sees EOF).
async fn assert_closed_by_server(stream: &mut TcpStream) {
    let mut buf = [0u8; 256];
    let n = bounded(stream.read(&mut buf)).await.unwrap();
    assert_eq!(
        n,
        0,
        "expected EOF, got {:?}",
        String::from_utf8_lossy(&buf[..n])
    );
}

/// Asserts that a drained HTTP/1 request was answered in full, told to close, and closed.
async fn assert_answered_then_closed(stream: &mut TcpStream, n: u8) {
    let response = read_to_close(stream).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{response}"
    );
    assert!(
        response.ends_with(&format!("\r\n\r\nreleased {}", client_ip(n))),
        "{response}"
    );
}

/// The drain scenario (see the module docs) against `server`, with clients `base..base + 4`.
///
/// `released_when_returned`: whether every permit is already released when the server's future
/// returns (hyper-util's `GracefulShutdown`), or only a moment later (`axum::serve`, whose
/// connection tasks signal that they are done before they drop the connection).
async fn drain_scenario(server: Server, base: u8, released_when_returned: bool) {
    let Server {
        addr,
        limiter,
        mut arrivals,
        stop,
        task,
    } = server;
    let (a, b, c, d) = (base, base + 1, base + 2, base + 3);
    let clients = [a, b, c, d];

    let mut idle_b = idle_connection(b, addr).await;
    let mut idle_c = idle_connection(c, addr).await;
    let mut slow_a = slow_request(a, addr).await;
    let mut slow_c = slow_request(c, addr).await;
    let mut h2 = http2_client(connect_from(d, addr).await).await;
    let slow_d = tokio::spawn(async move {
        let response = h2.send_request(get_request("/slow")).await.unwrap();
        collect(response).await
    });
    let mut held = held_requests(&mut arrivals, &[a, c, d]).await;

    // Before shutdown: 5 connections (C has two), 3 requests in flight, 4 clients.
    settle(
        &limiter,
        &clients,
        5,
        3,
        4,
        &[Some((1, 1)), Some((1, 0)), Some((2, 1)), Some((1, 1))],
    )
    .await;
    let stats = limiter.stats();
    assert_eq!(stats.admitted_connections, 5);
    assert_eq!(stats.admitted_requests, 5);
    assert_eq!(stats.rejected.total(), 0);

    stop.send(()).unwrap();

    // The idle connections are closed by the server and released; the in-flight ones stay.
    assert_closed_by_server(&mut idle_b).await;
    assert_closed_by_server(&mut idle_c).await;
    settle(
        &limiter,
        &clients,
        3,
        3,
        3,
        &[Some((1, 1)), None, Some((1, 1)), Some((1, 1))],
    )
    .await;
    assert!(
        !task.is_finished(),
        "the server returned with requests in flight"
    );

    // Each in-flight request completes, and its connection is then closed and released.
    held.remove(&client_ip(a)).unwrap().send(()).unwrap();
    assert_answered_then_closed(&mut slow_a, a).await;
    settle(
        &limiter,
        &clients,
        2,
        2,
        2,
        &[None, None, Some((1, 1)), Some((1, 1))],
    )
    .await;
    assert!(
        !task.is_finished(),
        "the server returned with requests in flight"
    );

    held.remove(&client_ip(d)).unwrap().send(()).unwrap();
    let (status, _, body) = bounded(slow_d).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, format!("released {}", client_ip(d)));
    settle(
        &limiter,
        &clients,
        1,
        1,
        1,
        &[None, None, Some((1, 1)), None],
    )
    .await;
    assert!(
        !task.is_finished(),
        "the server returned with a request in flight"
    );

    held.remove(&client_ip(c)).unwrap().send(()).unwrap();
    assert_answered_then_closed(&mut slow_c, c).await;

    // The server's future returns once the last connection is done, and nothing is left.
    bounded(task).await.unwrap();
    let nothing = [None, None, None, None];
    if released_when_returned {
        assert_eq!(
            Counts::of(&limiter, &clients),
            Counts {
                open: 0,
                in_flight: 0,
                tracked: 0,
                clients: nothing.to_vec(),
            }
        );
    } else {
        settle(&limiter, &clients, 0, 0, 0, &nothing).await;
    }
    let stats = limiter.stats();
    assert_eq!(stats.admitted_connections, 5);
    assert_eq!(stats.admitted_requests, 5);
    assert_eq!(stats.rejected.total(), 0);
}

#[tokio::test]
async fn axum_listener_releases_permits_as_connections_drain() {
    drain_scenario(axum_listener_server().await, 60, false).await;
}

#[tokio::test]
async fn axum_make_service_level_releases_permits_as_connections_drain() {
    drain_scenario(axum_make_service_server().await, 64, false).await;
}

#[tokio::test]
async fn hyper_util_graceful_shutdown_releases_permits_as_connections_drain() {
    drain_scenario(hyper_server().await, 68, true).await;
}

#[tokio::test]
async fn hyper_util_hard_deadline_releases_the_connections_it_drops() {
    let Server {
        addr,
        limiter,
        mut arrivals,
        stop,
        mut task,
    } = hyper_server().await;
    let (stuck, idle) = (72, 73);
    let clients = [stuck, idle];
    let mut idle_stream = idle_connection(idle, addr).await;
    let mut stuck_stream = slow_request(stuck, addr).await;
    let mut held = held_requests(&mut arrivals, &[stuck]).await;
    settle(&limiter, &clients, 2, 1, 2, &[Some((1, 1)), Some((1, 0))]).await;

    stop.send(()).unwrap();
    assert_closed_by_server(&mut idle_stream).await;
    settle(&limiter, &clients, 1, 1, 1, &[Some((1, 1)), None]).await;

    // The held request never finishes, so the graceful drain cannot end: give up after GRACE.
    assert!(
        tokio::time::timeout(GRACE, &mut task).await.is_err(),
        "the drain ended with a request in flight"
    );
    settle(&limiter, &clients, 1, 1, 1, &[Some((1, 1)), None]).await;

    // The hard deadline: aborting the server task drops its JoinSet, hence every connection.
    task.abort();
    assert!(bounded(task).await.unwrap_err().is_cancelled());
    settle(&limiter, &clients, 0, 0, 0, &[None, None]).await;
    assert!(was_refused(&mut stuck_stream).await, "got a response");
    // The handler was dropped, not released.
    let release = held.remove(&client_ip(stuck)).unwrap();
    assert!(release.is_closed());
    let stats = limiter.stats();
    assert_eq!(
        (stats.admitted_connections, stats.admitted_requests),
        (2, 2)
    );
}

#[test]
fn axum_hard_deadline_is_the_runtime_dropping_the_connection_tasks() {
    // The server gets a runtime of its own, so that the test can shut it down as `main`
    // returning would.
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let test_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let limiter = limiter();
    let (arrivals_tx, mut arrivals) = mpsc::unbounded_channel();
    let (stop, stop_rx) = oneshot::channel();
    let app = axum_app(&limiter, arrivals_tx);
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    let server_limiter = limiter.clone();
    let mut task = server_runtime.spawn(async move {
        let tcp = TcpListener::from_std(std_listener).unwrap();
        axum::serve(
            ConnLimitListener::new(tcp, server_limiter).for_axum(),
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(signal(stop_rx))
        .await
        .unwrap();
    });

    test_runtime.block_on(async {
        let (finishes, idle, stuck) = (76, 77, 78);
        let clients = [finishes, idle, stuck];
        let mut idle_stream = idle_connection(idle, addr).await;
        let mut finishes_stream = slow_request(finishes, addr).await;
        let mut stuck_stream = slow_request(stuck, addr).await;
        let mut held = held_requests(&mut arrivals, &[finishes, stuck]).await;
        settle(
            &limiter,
            &clients,
            3,
            2,
            3,
            &[Some((1, 1)), Some((1, 0)), Some((1, 1))],
        )
        .await;

        stop.send(()).unwrap();
        assert_closed_by_server(&mut idle_stream).await;
        settle(
            &limiter,
            &clients,
            2,
            2,
            2,
            &[Some((1, 1)), None, Some((1, 1))],
        )
        .await;
        assert!(
            tokio::time::timeout(GRACE, &mut task).await.is_err(),
            "the drain ended with requests in flight"
        );

        // Aborting the serve future is not a hard deadline: axum runs each connection in a task
        // of its own, which lives on (and keeps its permit) until the connection ends.
        task.abort();
        assert!(bounded(task).await.unwrap_err().is_cancelled());
        held.remove(&client_ip(finishes)).unwrap().send(()).unwrap();
        assert_answered_then_closed(&mut finishes_stream, finishes).await;
        settle(&limiter, &clients, 1, 1, 1, &[None, None, Some((1, 1))]).await;

        // Shutting the runtime down drops the remaining connection tasks, and their permits.
        server_runtime.shutdown_background();
        settle(&limiter, &clients, 0, 0, 0, &[None, None, None]).await;
        assert!(was_refused(&mut stuck_stream).await, "got a response");
        assert!(held.remove(&client_ip(stuck)).unwrap().is_closed());
        let stats = limiter.stats();
        assert_eq!(
            (stats.admitted_connections, stats.admitted_requests),
            (3, 3)
        );
    });
}
