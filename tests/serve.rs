//! `Serve`, over real loopback sockets: slow clients after the first request are cut within the
//! header timeout (a kept-alive HTTP/1 connection trickling its second request, an h2c
//! connection trickling a HEADERS frame), while honest clients, slow handlers included, are
//! served throughout; HTTP/2 streams are bounded; shutdown is graceful.
#![cfg(all(feature = "serve", feature = "axum"))]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tower_connlimit::serve::Serve;
use tower_connlimit::{layer::ClientIp, Config, ConnLimitLayer, ConnLimitListener, Limiter};

use support::*;

const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// How much later than the timeout a slow client may still be connected: the timer's
/// granularity and a loaded machine.
const SLACK: Duration = Duration::from_secs(2);
const TRICKLE: Duration = Duration::from_millis(200);

/// Serves a small app through `Serve`, with the request layer on; the address, the limiter
/// and the sender that shuts it down.
async fn serve() -> (SocketAddr, Limiter, oneshot::Sender<()>) {
    let limiter = Limiter::new(Config::default());
    let app = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                "slow\n"
            }),
        )
        .route(
            "/ip",
            get(|ClientIp(ip): ClientIp| async move { format!("{ip}\n") }),
        )
        .layer(ConnLimitLayer::with_limiter(limiter.clone()));
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Serve::new(ConnLimitListener::new(tcp, limiter.clone()), app)
        .header_timeout(HEADER_TIMEOUT)
        .max_concurrent_streams(2)
        .drain_deadline(Duration::from_secs(5));
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    (addr, limiter, stop)
}

/// Sends `bytes` one at a time, `TRICKLE` apart, until the server closes the connection or the
/// bytes run out; returns when the server was seen to close it, measured from `stalled`.
async fn trickle(stream: TcpStream, bytes: Vec<u8>, stalled: Instant) -> Option<Duration> {
    let (mut read, mut write) = stream.into_split();
    let closed = tokio::spawn(async move {
        let mut sink = [0u8; 4096];
        // Bounded by the test's deadline below; reads until EOF or an error.
        loop {
            match read.read(&mut sink).await {
                Ok(0) | Err(_) => return stalled.elapsed(),
                Ok(_) => {}
            }
        }
    });
    for byte in bytes {
        if closed.is_finished() || write.write_all(&[byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(TRICKLE).await;
    }
    tokio::time::timeout(HEADER_TIMEOUT + SLACK * 3, closed)
        .await
        .ok()
        .map(|joined| joined.unwrap())
}

/// An honest client from a fresh address, served now.
async fn honest(addr: SocketAddr, n: u8) {
    let mut client = http1_client(connect_from(n, addr).await).await;
    let (status, _, body) = h1_get(&mut client, "/ip").await;
    assert_eq!((status.as_u16(), body), (200, format!("127.0.0.{n}\n")));
}

#[tokio::test]
async fn a_kept_alive_connection_trickling_its_second_request_is_cut() {
    let (addr, limiter, _stop) = serve().await;
    let mut stream = connect_from(3, addr).await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let first = read_response(&mut stream).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let second = b"GET / HTTP/1.1\r\nhost: x\r\nx-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let stalled = Instant::now();
    let slow = tokio::spawn(trickle(stream, second.to_vec(), stalled));
    honest(addr, 4).await;
    let closed = slow.await.unwrap().expect("the server closed the trickle");
    assert!(closed <= HEADER_TIMEOUT + SLACK, "closed after {closed:?}");
    honest(addr, 5).await;
    wait_until("the trickle's connection is released", || {
        limiter.open_connections(client_ip(3)) == 0
    })
    .await;
    // The cut is seen: counted by cause, under the listener that admitted the connection.
    wait_until("the cut is counted", || {
        limiter.stats().closed["header_timeout"] == 1
    })
    .await;
    let stats = limiter.stats();
    assert_eq!(stats.point("listener").unwrap().closed["header_timeout"], 1);
}

/// An HTTP/2 frame: its header, then `payload`.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut bytes = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    bytes.extend_from_slice(&stream.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

#[tokio::test]
async fn an_h2c_connection_trickling_a_headers_frame_is_cut() {
    let (addr, limiter, _stop) = serve().await;
    let mut stream = connect_from(6, addr).await;
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    stream.write_all(&frame(0x4, 0, 0, &[])).await.unwrap();
    // The server's SETTINGS come first, and bound the streams.
    let mut header = [0u8; 9];
    bounded(stream.read_exact(&mut header)).await.unwrap();
    assert_eq!(header[3], 0x4, "SETTINGS");
    let len = usize::from(header[1]) << 8 | usize::from(header[2]);
    let mut settings = vec![0u8; len];
    bounded(stream.read_exact(&mut settings)).await.unwrap();
    let max_streams = settings
        .chunks(6)
        .find(|setting| setting[..2] == [0, 3])
        .map(|setting| u32::from_be_bytes(setting[2..].try_into().unwrap()));
    assert_eq!(max_streams, Some(2), "SETTINGS_MAX_CONCURRENT_STREAMS");
    // A HEADERS frame (GET /, END_HEADERS | END_STREAM), a byte at a time.
    let headers = frame(0x1, 0x4 | 0x1, 1, &[0x82, 0x86, 0x84, 0x41, 0x01, b'x']);
    let stalled = Instant::now();
    let slow = tokio::spawn(trickle(
        stream,
        headers[..headers.len() - 1].to_vec(),
        stalled,
    ));
    honest(addr, 7).await;
    let closed = slow.await.unwrap().expect("the server closed the trickle");
    assert!(closed <= HEADER_TIMEOUT + SLACK, "closed after {closed:?}");
    honest(addr, 8).await;
    assert_eq!(limiter.stats().closed["header_timeout"], 1, "counted once");
}

#[tokio::test]
async fn slow_handlers_are_not_cut_over_http1_or_http2() {
    let (addr, _limiter, _stop) = serve().await;
    // Longer than the header timeout, once the headers are in.
    let mut h1 = http1_client(connect_from(9, addr).await).await;
    let (status, _, body) = h1_get(&mut h1, "/slow").await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "slow\n"));
    let mut h2 = http2_client(connect_from(10, addr).await).await;
    let response = bounded(h2.send_request(get_request("/slow")))
        .await
        .unwrap();
    let (status, _, body) = collect(response).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "slow\n"));
    // The HTTP/2 connection stays usable after it.
    let response = bounded(h2.send_request(get_request("/ip"))).await.unwrap();
    assert_eq!(collect(response).await.2, "127.0.0.10\n");
}

#[tokio::test]
async fn shutdown_lets_open_requests_finish_and_accepts_no_more() {
    let (addr, limiter, stop) = serve().await;
    let mut client = http1_client(connect_from(11, addr).await).await;
    let in_flight = tokio::spawn(async move { h1_get(&mut client, "/slow").await });
    wait_until("the slow request is in flight", || {
        limiter.stats().in_flight_requests == 1
    })
    .await;
    stop.send(()).unwrap();
    let (status, _, body) = bounded(in_flight).await.unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "slow\n"));
    wait_until("the listener is closed", || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err()
    })
    .await;
}
