//! HTTPS on top of the listener, as `examples/tls.rs` builds it: the limits refuse a peer
//! before its handshake, a silent client is cut at the handshake deadline, and `Serve`'s header
//! timeout is counted through the TLS layer. Real TLS over loopback sockets, 127.0.0.N clients.

mod support;

#[allow(dead_code)]
#[path = "../examples/tls.rs"]
mod tls_example;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{crypto, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tower_connlimit::serve::Serve;
use tower_connlimit::{Config, ConnLimitListener, Limiter};

use support::*;
use tls_example::{server_config, TlsListener};

const CERT: &[u8] = include_bytes!("data/localhost.crt");
const KEY: &[u8] = include_bytes!("data/localhost.key");

/// An HTTPS server allowing `max_conns_per_client` connections per client, with `handshake`
/// as the TLS handshake deadline and a 1 s header timeout.
async fn server(max_conns_per_client: usize, handshake: Duration) -> (SocketAddr, Limiter) {
    let limiter = Limiter::new(Config {
        max_conns_per_client,
        ..Config::default()
    });
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = TlsListener::new(
        ConnLimitListener::new(tcp, limiter.clone()),
        server_config(CERT, KEY).unwrap(),
        handshake,
    );
    let app = Router::new().route("/", get(|| async { "hello over TLS\n" }));
    let serve = Serve::new(listener, app).header_timeout(Duration::from_secs(1));
    tokio::spawn(serve.run());
    (addr, limiter)
}

fn connector() -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(CERT) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// A TLS connection from 127.0.0.`n`.
async fn tls_from(
    n: u8,
    addr: SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = connect_from(n, addr).await;
    let name = ServerName::try_from("localhost").unwrap();
    bounded(connector().connect(name, tcp)).await
}

#[tokio::test]
async fn https_is_limited_before_the_handshake() {
    let (addr, limiter) = server(1, Duration::from_secs(5)).await;
    let mut first = http1_client(tls_from(2, addr).await.unwrap()).await;
    let (status, _, body) = h1_get(&mut first, "/").await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "hello over TLS\n"));
    assert_eq!(limiter.open_connections(client_ip(2)), 1);

    // The same client's second connection is closed before the server says hello.
    assert!(
        tls_from(2, addr).await.is_err(),
        "a handshake for a refused peer"
    );
    assert_eq!(limiter.stats().rejected["client_connections"], 1);
    // Another client is served meanwhile.
    let mut other = http1_client(tls_from(3, addr).await.unwrap()).await;
    assert_eq!(h1_get(&mut other, "/").await.0, 200);

    drop((first, other));
    wait_until_drained(&limiter).await;
}

#[tokio::test]
async fn a_client_that_never_says_hello_is_cut_and_stalls_nobody() {
    let (addr, limiter) = server(0, Duration::from_millis(300)).await;
    let mut silent = connect_from(4, addr).await;
    wait_until("the silent connection is counted", || {
        limiter.open_connections(client_ip(4)) == 1
    })
    .await;
    // Its handshake is pending; others are served.
    let mut honest = http1_client(tls_from(5, addr).await.unwrap()).await;
    assert_eq!(h1_get(&mut honest, "/").await.0, 200);
    // At the deadline its connection is closed, and its permit goes with it.
    let said = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(said.is_empty(), "{said:?}");
    wait_until("the silent connection is released", || {
        limiter.open_connections(client_ip(4)) == 0
    })
    .await;
}

#[tokio::test]
async fn a_header_timeout_over_tls_is_counted_under_the_listener() {
    let (addr, limiter) = server(0, Duration::from_secs(5)).await;
    let mut tls = tls_from(6, addr).await.unwrap();
    // Half a request's headers, then silence: Serve's header timeout cuts it.
    tls.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    wait_until("the cut is counted", || {
        limiter.stats().closed["header_timeout"] == 1
    })
    .await;
    wait_until("the connection is released", || {
        limiter.open_connections(client_ip(6)) == 0
    })
    .await;
    assert_eq!(
        limiter.stats().point("listener").unwrap().closed["header_timeout"],
        1
    );
}
