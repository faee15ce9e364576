//! The listener admission point over real loopback sockets, with distinct 127.0.0.N clients.
#![cfg(feature = "axum")]

mod support;

use std::net::SocketAddr;

use axum::extract::ws::{Message as WsMessage, WebSocketUpgrade};
use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tower_connlimit::{listener::RejectAction, Config, ConnLimitListener, Limiter};

use support::*;

fn limiter(max_conns_per_client: usize) -> Limiter {
    Limiter::new(Config {
        max_conns_per_client,
        ..Config::default()
    })
}

/// An echo server behind `ConnLimitListener` in a plain tokio accept loop.
async fn echo_server(limiter: Limiter, action: RejectAction) -> SocketAddr {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut listener = ConnLimitListener::new(tcp, limiter).reject_with(action);
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut io, _peer)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 256];
                while let Ok(n @ 1..) = io.read(&mut buf).await {
                    if io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Connects from 127.0.0.n and proves the connection was admitted by an echo round trip.
async fn admitted_from(n: u8, server: SocketAddr) -> TcpStream {
    let mut stream = connect_from(n, server).await;
    stream.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    bounded(stream.read_exact(&mut buf)).await.unwrap();
    assert_eq!(&buf, b"ping");
    stream
}

#[tokio::test]
async fn third_connection_is_closed_and_freeing_one_admits_another() {
    let limiter = limiter(2);
    let server = echo_server(limiter.clone(), RejectAction::Close).await;
    let first = admitted_from(2, server).await;
    let _second = admitted_from(2, server).await;
    let mut third = connect_from(2, server).await;
    assert!(
        was_refused(&mut third).await,
        "third connection must be closed"
    );
    assert_eq!(limiter.open_connections(client_ip(2)), 2);

    drop(first);
    wait_until("the freed connection is released", || {
        limiter.open_connections(client_ip(2)) == 1
    })
    .await;
    let _fourth = admitted_from(2, server).await;
    assert_eq!(limiter.stats().rejected["client_connections"], 1);
}

#[tokio::test]
async fn set_config_to_three_admits_one_more() {
    let limiter = limiter(2);
    let server = echo_server(limiter.clone(), RejectAction::Close).await;
    let _held = [
        admitted_from(3, server).await,
        admitted_from(3, server).await,
    ];
    let mut refused = connect_from(3, server).await;
    assert!(was_refused(&mut refused).await);

    limiter
        .set_config(Config {
            max_conns_per_client: 3,
            ..Config::default()
        })
        .unwrap();
    let _third = admitted_from(3, server).await;
    assert_eq!(limiter.open_connections(client_ip(3)), 3);
    let mut fourth = connect_from(3, server).await;
    assert!(was_refused(&mut fourth).await);
}

#[tokio::test]
async fn other_clients_are_unaffected_and_the_map_empties() {
    let limiter = limiter(1);
    let server = echo_server(limiter.clone(), RejectAction::Close).await;
    let a = admitted_from(4, server).await;
    let mut a2 = connect_from(4, server).await;
    assert!(was_refused(&mut a2).await);
    let b = admitted_from(5, server).await;
    let c = admitted_from(6, server).await;
    assert_eq!(limiter.stats().tracked_clients, 3);

    drop((a, b, c));
    wait_until("every client is forgotten", || {
        let stats = limiter.stats();
        stats.open_connections == 0 && stats.tracked_clients == 0
    })
    .await;
}

#[tokio::test]
async fn the_global_cap_holds_at_accept() {
    let limiter = Limiter::new(Config {
        max_conns_per_client: 0,
        max_conns_total: 2,
        ..Config::default()
    });
    let server = echo_server(limiter.clone(), RejectAction::Close).await;
    let _a = admitted_from(7, server).await;
    let _b = admitted_from(8, server).await;
    let mut c = connect_from(9, server).await;
    assert!(was_refused(&mut c).await);
    assert_eq!(limiter.stats().rejected["total_connections"], 1);
}

#[tokio::test]
async fn reset_action_resets_the_connection() {
    let limiter = limiter(1);
    let server = echo_server(limiter.clone(), RejectAction::Reset).await;
    let _held = admitted_from(10, server).await;
    let mut refused = connect_from(10, server).await;
    let mut buf = [0u8; 8];
    let err = bounded(refused.read(&mut buf)).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
}

#[tokio::test]
async fn http_action_answers_429_and_503_without_leaking_limits() {
    let limiter = Limiter::new(Config {
        max_conns_per_client: 1,
        max_conns_total: 2,
        ..Config::default()
    });
    let server = echo_server(limiter.clone(), RejectAction::HttpResponse).await;
    let _held = admitted_from(11, server).await;

    let answer = raw_get_from(11, server).await;
    assert!(
        answer.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
        "{answer}"
    );
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    assert_eq!(body, "too many requests\n");
    assert!(
        !body.contains(|c: char| c.is_ascii_digit()),
        "the answer names no number"
    );

    let _second = admitted_from(12, server).await;
    let answer = raw_get_from(13, server).await;
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer}"
    );
}

/// Sends a raw `GET /` from 127.0.0.n and returns everything the server answers until it closes.
async fn raw_get_from(n: u8, server: SocketAddr) -> String {
    let mut stream = connect_from(n, server).await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    read_to_close(&mut stream).await.unwrap()
}

#[tokio::test]
async fn a_client_that_never_reads_cannot_stall_accepting() {
    // Refusals are written off the accept path: while refused clients sit silent, never reading
    // and never closing, an honest client is still accepted at once.
    let limiter = limiter(1);
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut listener = ConnLimitListener::new(tcp, limiter.clone())
        .reject_with(RejectAction::HttpResponse)
        .max_pending_rejections(2)
        .reject_deadline(std::time::Duration::from_secs(30));
    let server = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((io, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut io = io;
                let _ = io.write_all(b"welcome").await;
                let _ = io.read(&mut [0u8; 1]).await;
            });
        }
    });
    let _held = connect_from(14, server).await;
    wait_until("the first connection is counted", || {
        limiter.open_connections(client_ip(14)) == 1
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(connect_from(14, server).await);
    }
    wait_until("all silent clients are refused", || {
        limiter.stats().rejected["client_connections"] == 8
    })
    .await;
    let mut honest = connect_from(15, server).await;
    let mut buf = [0u8; 7];
    bounded(honest.read_exact(&mut buf)).await.unwrap();
    assert_eq!(&buf, b"welcome");
}

/// An axum app behind the listener, served with `ConnectInfo<SocketAddr>`.
async fn axum_server(limiter: Limiter) -> SocketAddr {
    let app = Router::new()
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        )
        .route(
            "/ws",
            get(|ws: WebSocketUpgrade| async move {
                ws.on_upgrade(|mut socket| async move {
                    while let Some(Ok(msg)) = socket.recv().await {
                        if let WsMessage::Text(_) = msg {
                            if socket.send(msg).await.is_err() {
                                break;
                            }
                        }
                    }
                })
            }),
        );
    serve_behind_listener(app, limiter).await
}

#[tokio::test]
async fn axum_serve_gets_connect_info_through_the_listener() {
    let limiter = limiter(1);
    let server = axum_server(limiter.clone()).await;
    let stream = connect_from(16, server).await;
    let local = stream.local_addr().unwrap();
    let mut client = http1_client(stream).await;
    let (status, _, body) = h1_get(&mut client, "/peer").await;
    assert_eq!(status, 200);
    assert_eq!(body, local.to_string());
    assert_eq!(limiter.open_connections(client_ip(16)), 1);

    let mut refused = connect_from(16, server).await;
    assert!(was_refused(&mut refused).await);
}

#[tokio::test]
async fn a_websocket_stays_counted_until_it_closes() {
    let limiter = limiter(1);
    let server = axum_server(limiter.clone()).await;
    let stream = connect_from(17, server).await;
    let (mut ws, _) = bounded(tokio_tungstenite::client_async(
        format!("ws://{server}/ws"),
        stream,
    ))
    .await
    .unwrap();
    ws.send(Message::text("hi")).await.unwrap();
    let echoed = bounded(ws.next()).await.unwrap().unwrap();
    assert_eq!(echoed, Message::text("hi"));

    // The upgrade dropped hyper's per-connection service; the IO, and its permit, live on.
    assert_eq!(limiter.open_connections(client_ip(17)), 1);
    let mut refused = connect_from(17, server).await;
    assert!(was_refused(&mut refused).await);

    ws.close(None).await.unwrap();
    drop(ws);
    wait_until("the closed WebSocket is released", || {
        limiter.open_connections(client_ip(17)) == 0
    })
    .await;
    let _again = bounded(tokio_tungstenite::client_async(
        format!("ws://{server}/ws"),
        connect_from(17, server).await,
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn http2_connections_are_counted() {
    let limiter = limiter(1);
    let server = axum_server(limiter.clone()).await;
    let mut h2 = http2_client(connect_from(18, server).await).await;
    let response = bounded(h2.send_request(get_request("/peer")))
        .await
        .unwrap();
    let (status, _, _) = collect(response).await;
    assert_eq!(status, 200);
    assert_eq!(limiter.open_connections(client_ip(18)), 1);

    let mut refused = connect_from(18, server).await;
    assert!(was_refused(&mut refused).await);

    drop(h2);
    wait_until("the h2 connection is released", || {
        limiter.stats().tracked_clients == 0
    })
    .await;
}

#[tokio::test]
async fn an_http_refusal_to_a_silent_client_ends_at_the_deadline() {
    let limiter = limiter(1);
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut listener = ConnLimitListener::new(tcp, limiter.clone())
        .reject_with(RejectAction::HttpResponse)
        .reject_deadline(std::time::Duration::from_millis(50));
    let server = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((io, _)) = listener.accept().await {
            held.push(io);
        }
    });
    let _held = connect_from(19, server).await;
    let mut silent = connect_from(19, server).await;
    // It never sends a request, so it gets no answer: just the close, once the deadline passes.
    assert_eq!(read_to_close(&mut silent).await.unwrap(), "");
    assert_eq!(limiter.stats().rejected["client_connections"], 1);
}

#[tokio::test]
async fn a_dual_stack_listener_keys_ipv4_clients_as_ipv4() {
    // On a `[::]` listener, IPv4 clients arrive as `::ffff:127.0.0.N`; they must be keyed, and
    // limited, as `127.0.0.N`.
    let Ok(tcp) = TcpListener::bind("[::]:0").await else {
        eprintln!("skipped: this machine has no IPv6");
        return;
    };
    let limiter = limiter(1);
    let port = tcp.local_addr().unwrap().port();
    let mut listener = ConnLimitListener::new(tcp, limiter.clone());
    let (peers_tx, mut peers) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((io, peer)) = listener.accept().await {
            let _ = peers_tx.send(peer);
            held.push(io);
        }
    });
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    let _first = connect_from(39, server).await;
    let peer = bounded(peers.recv()).await.unwrap();
    assert_eq!(peer.ip().to_string(), "::ffff:127.0.0.39");
    assert_eq!(limiter.open_connections(client_ip(39)), 1);
    assert_eq!(limiter.clients()[0].key.to_string(), "127.0.0.39");
    let mut second = connect_from(39, server).await;
    assert!(was_refused(&mut second).await);
}
