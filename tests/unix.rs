//! An app on a Unix socket behind a local proxy, as `examples/unix.rs` serves it: each client the
//! proxy names in `X-Forwarded-For` is limited on its own, a request naming nobody is held to the
//! proxy's allowance, and the proxy's connections are not capped. Real Unix sockets, a real
//! hyper client.
#![cfg(unix)]

mod support;

#[allow(dead_code)]
#[path = "../examples/unix.rs"]
mod unix_example;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use tokio::net::UnixStream;
use tower_connlimit::{Config, Limiter, RateLimit};

use support::*;

/// The example's server on a socket in a directory of the test's own; the directory goes when
/// the returned guard drops.
async fn server(config: Config) -> (std::path::PathBuf, Limiter, TempDir) {
    let dir = TempDir::new();
    let path = dir.0.join("app.sock");
    let limiter = Limiter::new(config);
    // Bound before the server task starts, so connections wait in its backlog.
    let unix = unix_example::listen(&path).unwrap();
    tokio::spawn(unix_example::serve(unix, limiter.clone()));
    (path, limiter, dir)
}

/// A directory removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("connlimit-unix-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `GET /` with `headers` on a new connection to the socket: the status and body.
async fn get(path: &std::path::Path, headers: &[(&str, &str)]) -> (u16, String) {
    let mut sender = http1_client(UnixStream::connect(path).await.unwrap()).await;
    let mut request = http::Request::get("/").header(http::header::HOST, "localhost");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    bounded(sender.ready()).await.unwrap();
    let response = bounded(sender.send_request(request.body(Empty::<Bytes>::new()).unwrap()))
        .await
        .unwrap();
    let (status, _, body) = collect(response).await;
    (status.as_u16(), body)
}

#[tokio::test]
async fn each_client_the_local_proxy_names_is_limited_on_its_own() {
    let rate = RateLimit::new(2, Duration::from_secs(3600));
    let (path, limiter, _dir) = server(unix_example::config(rate)).await;
    let alice = [("x-forwarded-for", "203.0.113.7")];
    let bob = [("x-forwarded-for", "203.0.113.8")];
    assert_eq!(
        get(&path, &alice).await,
        (200, "hello 203.0.113.7\n".into())
    );
    assert_eq!(get(&path, &alice).await.0, 200);
    assert_eq!(get(&path, &alice).await.0, 429, "alice's third");
    assert_eq!(get(&path, &bob).await, (200, "hello 203.0.113.8\n".into()));
    // A request naming nobody is the proxy's own: 127.0.0.1's allowance, then refused.
    assert_eq!(get(&path, &[]).await, (200, "hello 127.0.0.1\n".into()));
    assert_eq!(get(&path, &[]).await.0, 200);
    assert_eq!(get(&path, &[]).await.0, 429);
    let stats = limiter.stats();
    assert_eq!(stats.unidentified_requests, 3);
    assert_eq!(stats.rejected["request_rate"], 2);
}

#[tokio::test]
async fn the_local_proxys_connections_are_not_capped_but_untrusted_peers_share_one_allowance() {
    // Trusted: many connections at once from the socket's one peer address.
    let trusted = Config {
        max_conns_per_client: 2,
        ..unix_example::config(RateLimit::new(100, Duration::from_secs(60)))
    };
    let (path, limiter, _dir) = server(trusted).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(UnixStream::connect(&path).await.unwrap());
    }
    wait_until("five connections are counted", || {
        limiter.open_connections(client_ip(1)) == 5
    })
    .await;
    assert_eq!(
        get(&path, &[("x-forwarded-for", "203.0.113.9")]).await.0,
        200
    );
    drop(held);

    // Not trusted: every peer of the socket is the one client 127.0.0.1.
    let untrusted = Config {
        max_conns_per_client: 2,
        ..Config::default()
    };
    let (path, limiter, _dir) = server(untrusted).await;
    let _a = UnixStream::connect(&path).await.unwrap();
    let _b = UnixStream::connect(&path).await.unwrap();
    wait_until("two connections are counted", || {
        limiter.open_connections(client_ip(1)) == 2
    })
    .await;
    let mut third = UnixStream::connect(&path).await.unwrap();
    let said = read_until_closed_unix(&mut third).await;
    assert!(said.is_empty(), "a third connection is refused: {said:?}");
    assert_eq!(limiter.stats().rejected["client_connections"], 1);
}

/// Reads until the server closes `stream`, within the suite's bound.
async fn read_until_closed_unix(stream: &mut UnixStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let _ = bounded(stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
