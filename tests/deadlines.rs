//! Listener deadlines: a first-byte (handshake) timeout, an idle timeout and a minimum receive
//! rate, over real loopback sockets on paused tokio time, so each test can check *when* the
//! server closed, to the virtual second.
#![cfg(feature = "axum")]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tower_connlimit::{
    listener::ListenerConfig, listener::MinReceiveRate, Config, ConnLimitListener, Limiter,
};

use support::*;

/// Long enough for every scenario here in virtual time; the tests run in milliseconds.
const SCENARIO: Duration = Duration::from_secs(300);

/// An axum server behind the listener: `/` answers at once, `/poll` after 40 seconds (a
/// long-poll).
async fn server(config: Config) -> (SocketAddr, Limiter) {
    let limiter = Limiter::new(config);
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .route(
            "/poll",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(40)).await;
                "news"
            }),
        )
        .route(
            "/busy",
            post(|request: axum::extract::Request| async move {
                // Works for 20 s before reading the body the client sent long ago.
                tokio::time::sleep(Duration::from_secs(20)).await;
                let body = axum::body::to_bytes(request.into_body(), 10_000)
                    .await
                    .unwrap();
                format!("read {}", body.len())
            }),
        );
    (serve_behind_listener(app, limiter.clone()).await, limiter)
}

/// Sends `request` in pieces of `chunk` bytes, `every` apart; stops early if the server closes.
/// Returns how many bytes went out.
async fn trickle(stream: &mut TcpStream, request: &[u8], chunk: usize, every: Duration) -> usize {
    let mut sent = 0;
    for piece in request.chunks(chunk) {
        if stream.write_all(piece).await.is_err() {
            break;
        }
        sent += piece.len();
        tokio::time::sleep(every).await;
    }
    sent
}

fn slow_config() -> Config {
    Config {
        listener: ListenerConfig {
            min_receive_rate: Some(MinReceiveRate::new(100, Duration::from_secs(5))),
            idle_timeout: Duration::from_secs(60),
            ..ListenerConfig::default()
        },
        ..Config::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_client_trickling_one_byte_a_second_is_cut_off_after_the_grace() {
    let (addr, limiter) = server(slow_config()).await;
    let mut stream = connect_from(2, addr).await;
    let (mut reader, mut writer) = stream.split();
    let started = Instant::now();
    // A slowloris: a request that never ends, one byte a second, for at most 120 bytes.
    let header = [b"GET / HTTP/1.1\r\nX-Slow: ".as_slice(), &[b'a'; 100]].concat();
    let watch = async {
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(SCENARIO, reader.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        started.elapsed()
    };
    let (closed_after, _) = tokio::join!(
        watch,
        trickle_half(&mut writer, &header, Duration::from_secs(1))
    );
    // Byte k arrives at k seconds; at 6 s, 7 bytes earn 5 s + 70 ms: past it.
    assert_eq!(closed_after.as_secs(), 6, "{closed_after:?}");
    let stats = limiter.stats();
    assert_eq!(stats.closed["min_receive_rate"], 1);
    assert_eq!(stats.closed.total(), 1);
    wait_until("the permit is released", || {
        limiter.stats().open_connections == 0
    })
    .await;
}

/// [`trickle`] one byte at a time on a write half.
async fn trickle_half(
    writer: &mut (impl AsyncWriteExt + Unpin),
    bytes: &[u8],
    every: Duration,
) -> usize {
    let mut sent = 0;
    for byte in bytes {
        if writer.write_all(&[*byte]).await.is_err() {
            break;
        }
        sent += 1;
        tokio::time::sleep(every).await;
    }
    sent
}

#[tokio::test(start_paused = true)]
async fn slow_but_honest_clients_and_long_polls_are_not_cut_off() {
    let (addr, limiter) = server(slow_config()).await;

    // 80 bytes a second, below the 100 B/s minimum, but the 5 s grace covers the request.
    let request = b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: slow-link/1.0\r\nAccept: */*\r\nConnection: close\r\n\r\n";
    let mut slow = connect_from(2, addr).await;
    let sent = trickle(&mut slow, request, 8, Duration::from_millis(100)).await;
    assert_eq!(sent, request.len());
    let answer = read_until_closed(&mut slow, SCENARIO).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A long-poll: the request goes out at once, the answer comes 40 s later, well past the
    // grace; the quiet wait is not a slow send.
    let mut poll = connect_from(3, addr).await;
    let started = Instant::now();
    poll.write_all(b"GET /poll HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut poll, SCENARIO).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("news"), "{answer}");
    assert_eq!(started.elapsed().as_secs(), 40);

    // A server busy for 20 s before reading a body that arrived at once: the client was quick,
    // the server slow, and the client is not blamed.
    let mut upload = connect_from(4, addr).await;
    upload
        .write_all(b"POST /busy HTTP/1.1\r\nHost: localhost\r\nContent-Length: 15\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    upload.write_all(&[b'x'; 15]).await.unwrap();
    let answer = read_until_closed(&mut upload, SCENARIO).await;
    assert!(answer.ends_with("read 15"), "{answer}");

    assert_eq!(limiter.stats().closed.total(), 0);
}

#[tokio::test(start_paused = true)]
async fn split_halves_both_see_the_idle_timeout() {
    let limiter = Limiter::new(Config {
        listener: ListenerConfig {
            idle_timeout: Duration::from_secs(30),
            ..ListenerConfig::default()
        },
        ..Config::default()
    });
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let mut listener = ConnLimitListener::new(tcp, limiter.clone());
    let server = tokio::spawn(async move {
        let (io, _) = listener.accept().await.unwrap();
        let (mut reader, mut writer) = tokio::io::split(io);
        // The writer fills the socket of a client that never reads, so it is the last to wait
        // on the deadline timer; the reader waits on a client that never sends.
        let writing = tokio::spawn(async move {
            let chunk = vec![0u8; 64 * 1024];
            // Bounded: at most 64 MiB, far more than the socket buffers hold.
            for _ in 0..1024 {
                writer.write_all(&chunk).await?;
            }
            Ok::<_, std::io::Error>(())
        });
        let mut buf = [0u8; 16];
        let read = reader.read(&mut buf).await;
        (
            read.map_err(|e| e.kind()),
            writing.await.unwrap().map_err(|e| e.kind()),
        )
    });
    let _client = connect_from(2, addr).await;
    let (read, write) = tokio::time::timeout(SCENARIO, server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read, Err(std::io::ErrorKind::TimedOut));
    assert_eq!(write, Err(std::io::ErrorKind::TimedOut));
    assert_eq!(limiter.stats().closed["idle_timeout"], 1);
    assert_eq!(limiter.stats().open_connections, 0);
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_closed_at_the_idle_timeout() {
    let (addr, limiter) = server(Config {
        listener: ListenerConfig {
            idle_timeout: Duration::from_secs(30),
            ..ListenerConfig::default()
        },
        ..Config::default()
    })
    .await;
    let mut stream = connect_from(2, addr).await;
    // Keep-alive requests, each 20 s after the last answer: never idle for 30 s.
    for _ in 0..3 {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let answer = read_response(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        tokio::time::sleep(Duration::from_secs(20)).await;
    }
    assert_eq!(limiter.stats().closed["idle_timeout"], 0);
    // Then silence: the server closes 30 s after the last answer, 10 s from now.
    let started = Instant::now();
    assert_eq!(read_until_closed(&mut stream, SCENARIO).await, "");
    assert_eq!(started.elapsed().as_secs(), 10);
    assert_eq!(limiter.stats().closed["idle_timeout"], 1);
    wait_until("the permit is released", || {
        limiter.stats().open_connections == 0
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_never_sends_a_first_byte_is_closed_at_the_handshake_timeout() {
    let (addr, limiter) = server(Config {
        listener: ListenerConfig {
            handshake_timeout: Duration::from_secs(5),
            ..ListenerConfig::default()
        },
        ..Config::default()
    })
    .await;
    let started = Instant::now();
    let mut silent = connect_from(2, addr).await;
    // A client that starts within the timeout is served normally, and stays open after it.
    let mut prompt = connect_from(3, addr).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    prompt
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = bounded(prompt.read(&mut buf)).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    assert_eq!(read_until_closed(&mut silent, SCENARIO).await, "");
    assert_eq!(started.elapsed().as_secs(), 5);
    let stats = limiter.stats();
    assert_eq!(stats.closed["handshake_timeout"], 1);
    assert_eq!(
        stats.open_connections, 1,
        "the prompt client is still connected"
    );
}

#[tokio::test(start_paused = true)]
async fn a_normal_client_is_unaffected_by_every_deadline() {
    let (addr, limiter) = server(Config {
        listener: ListenerConfig {
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            min_receive_rate: Some(MinReceiveRate::new(500, Duration::from_secs(5))),
            ..ListenerConfig::default()
        },
        ..Config::default()
    })
    .await;
    let mut sender = http1_client(connect_from(2, addr).await).await;
    for _ in 0..20 {
        let (status, _, body) = h1_get(&mut sender, "/").await;
        assert_eq!((status.as_u16(), body.as_str()), (200, "ok"));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let stats = limiter.stats();
    assert_eq!(stats.closed.total(), 0);
    assert_eq!(stats.admitted_connections, 1);
    assert_eq!(stats.open_connections, 1);
}
