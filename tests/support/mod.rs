//! Helpers shared by the integration tests: distinct loopback clients, bounded waits, and a
//! minimal HTTP/1 and HTTP/2 client.
#![allow(dead_code)]

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// The loopback address `127.0.0.n`: a distinct client per `n`.
pub fn client_ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// Opens a TCP connection to `server` from source address `127.0.0.n`.
pub async fn connect_from(n: u8, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(client_ip(n), 0)).unwrap();
    bounded(socket.connect(server)).await.unwrap()
}

/// Awaits `fut`, failing the test if it takes longer than [`WAIT`].
pub async fn bounded<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(WAIT, fut)
        .await
        .expect("operation did not finish in time")
}

/// Waits until `cond` holds, polling observable state; fails the test after [`WAIT`].
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(WAIT, async {
        // Bounded by the timeout above; each turn yields to the runtime.
        loop {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting until {what}");
}

/// Whether the server closed (or reset) `stream` without sending anything: reads until EOF or an
/// error, bounded by [`WAIT`].
pub async fn was_refused(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match bounded(stream.read(&mut buf)).await {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
        ),
    }
}

/// Reads everything the server sends until it closes, bounded by [`WAIT`].
pub async fn read_to_close(stream: &mut TcpStream) -> io::Result<String> {
    let mut out = Vec::new();
    bounded(stream.read_to_end(&mut out)).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// An HTTP/1.1 client connection over `stream` (TCP, TLS, a Unix socket); the connection task
/// runs in the background.
pub async fn http1_client<IO>(stream: IO) -> http1::SendRequest<Empty<Bytes>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = bounded(http1::handshake(TokioIo::new(stream)))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    sender
}

/// An HTTP/2 (prior knowledge) client connection over `stream`.
pub async fn http2_client(stream: TcpStream) -> http2::SendRequest<Empty<Bytes>> {
    let (sender, conn) = bounded(http2::handshake(TokioExecutor::new(), TokioIo::new(stream)))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

/// A GET request for `path`.
pub fn get_request(path: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(path)
        .header(http::header::HOST, "localhost")
        .body(Empty::new())
        .unwrap()
}

/// The status, headers and whole body of a response.
pub async fn collect(
    response: http::Response<hyper::body::Incoming>,
) -> (http::StatusCode, http::HeaderMap, String) {
    let (parts, body) = response.into_parts();
    let body = bounded(body.collect()).await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// Sends a GET for `path` on an HTTP/1 connection and collects the answer.
pub async fn h1_get(
    sender: &mut http1::SendRequest<Empty<Bytes>>,
    path: &str,
) -> (http::StatusCode, http::HeaderMap, String) {
    bounded(sender.ready()).await.unwrap();
    let response = bounded(sender.send_request(get_request(path)))
        .await
        .unwrap();
    collect(response).await
}

/// Serves `app` on a loopback port with `ConnectInfo<SocketAddr>`; returns the address.
#[cfg(feature = "axum")]
pub async fn serve_with_connect_info(app: axum::Router) -> SocketAddr {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(tcp, app.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .unwrap()
    });
    addr
}

/// Serves `app` on a loopback port behind a `ConnLimitListener` admitting through `limiter`,
/// with `ConnectInfo<SocketAddr>`; returns the address.
#[cfg(feature = "axum")]
pub async fn serve_behind_listener(
    app: axum::Router,
    limiter: tower_connlimit::Limiter,
) -> SocketAddr {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = tower_connlimit::ConnLimitListener::new(tcp, limiter).for_axum();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap()
    });
    addr
}

/// Waits until `limiter` holds nothing: no open connection, no in-flight request, and, once
/// drained clients are forgotten ([`Limiter::purge_expired`]), no tracked client. Fails the test
/// after [`WAIT`], naming what is still held and by whom.
///
/// [`Limiter::purge_expired`]: tower_connlimit::Limiter::purge_expired
pub async fn wait_until_drained(limiter: &tower_connlimit::Limiter) {
    let drained = tokio::time::timeout(WAIT, async {
        // Bounded by the timeout above; each turn yields to the runtime.
        loop {
            limiter.purge_expired();
            let stats = limiter.stats();
            if stats.open_connections == 0
                && stats.in_flight_requests == 0
                && stats.tracked_clients == 0
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    let stats = limiter.stats();
    assert!(
        drained.is_ok(),
        "the limiter never drained: {} open connections, {} in-flight requests, {} tracked \
         clients: {:?}",
        stats.open_connections,
        stats.in_flight_requests,
        stats.tracked_clients,
        limiter.clients(),
    );
}

/// Drops `stream` with `SO_LINGER` 0, so the peer sees a reset (RST) rather than a close (FIN).
pub fn reset(stream: TcpStream) {
    stream.set_zero_linger().unwrap();
    drop(stream);
}

/// Reads everything the server sends until it closes or resets `stream`; fails the test if
/// that takes longer than `within`. A reset ends the read like a close, keeping what came
/// before it.
pub async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut chunk = [0u8; 4096];
        // Bounded by the timeout; each turn either reads data or ends.
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server did not close within {within:?}");
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one whole response (head and `content-length` body) and leaves the connection open.
pub async fn read_response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    // Bounded: every read is bounded, and a response here is far smaller than 64 reads.
    for _ in 0..64 {
        let n = bounded(stream.read(&mut buf)).await.unwrap();
        assert!(n > 0, "connection closed mid-response: {received:?}");
        received.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length: usize = text[..head_end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().unwrap())
                })
                .expect("a content-length");
            if text.len() >= head_end + 4 + length {
                return text;
            }
        }
    }
    panic!("no complete response in 64 reads: {received:?}");
}

/// A tokio executor for hyper that can abort every task it has spawned, at once: a client
/// process dying. Aborting drops the connection's socket, without the GOAWAY of a polite close.
#[derive(Clone, Debug, Default)]
pub struct KillableExecutor {
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl KillableExecutor {
    /// Aborts every task spawned so far; their sockets close as the runtime drops them.
    pub fn kill(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl<F> hyper::rt::Executor<F> for KillableExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        let task = tokio::spawn(fut).abort_handle();
        self.tasks.lock().unwrap().push(task);
    }
}

/// An HTTP/2 (prior knowledge) client connection over `stream` sending bodies of type `B`, with
/// the executor running all of its tasks: [`KillableExecutor::kill`] makes the client vanish.
pub async fn killable_http2_client<B>(
    stream: TcpStream,
) -> (http2::SendRequest<B>, KillableExecutor)
where
    B: http_body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let executor = KillableExecutor::default();
    let (sender, conn) = bounded(http2::handshake(executor.clone(), TokioIo::new(stream)))
        .await
        .unwrap();
    hyper::rt::Executor::execute(&executor, async move {
        let _ = conn.await;
    });
    (sender, executor)
}
