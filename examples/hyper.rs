//! A hand-written hyper-util accept loop with the make-service level, and graceful shutdown.
//!
//! ```text
//! cargo run --example hyper -- [--addr 127.0.0.1:3001] [--max-per-client 4]
//! ```
//!
//! No axum: the make-service is a `tower::service_fn` whose target is the peer's `SocketAddr`,
//! wrapped in `ConnLimitLayer`. Each admitted connection's service holds its permit until hyper
//! drops it; an over-limit HTTP/1 client gets `429` with `Connection: close`, and one that never
//! sends a request is closed by hyper's header-read timeout (10 s here). On Ctrl-C the loop
//! stops accepting, and hyper-util's `GracefulShutdown` lets open connections finish; their
//! permits are released as they drain.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::{service_fn, Service, ServiceExt};
use tower_connlimit::{layer::ClientAddr, Config, ConnLimitLayer};
use tower_layer::Layer;

async fn hello(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // The make-service level tells every request who its client is.
    let peer = request.extensions().get::<ClientAddr>().map(|c| c.0);
    let text = format!("hello {}\n", peer.map_or("?".into(), |p| p.to_string()));
    Ok(Response::new(Full::new(Bytes::from(text))))
}

/// A hand-written hyper-util HTTP/1 accept loop with per-client connection limits.
#[derive(Debug, clap::Parser)]
#[command(name = "hyper")]
struct Args {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:3001")]
    addr: SocketAddr,
    /// Connections one client may hold (0: unlimited).
    #[arg(long, default_value_t = 4, value_name = "N")]
    max_per_client: usize,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_connlimit=debug".into()),
        )
        .init();
    let args = <Args as clap::Parser>::parse();
    let (addr, max_conns_per_client) = (args.addr, args.max_per_client);

    let layer = ConnLimitLayer::try_new(Config {
        max_conns_per_client,
        ..Config::default()
    })?;
    let limiter = layer.limiter().clone();
    let mut make_service = layer.layer(service_fn(|_peer: SocketAddr| async {
        Ok::<_, Infallible>(service_fn(hello))
    }));

    let listener = TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, max_conns_per_client, "listening");
    let graceful = GracefulShutdown::new();
    // HTTP/1 only, with a timer: hyper's header-read timeout then runs from the first moment of
    // every connection, so one that never sends a request (an over-limit client's included, which
    // can only be answered once it asks) is closed. `auto::Builder` would first wait, with no
    // timeout, for bytes to tell HTTP/1 from HTTP/2; and the make-service level cannot close a
    // refused HTTP/2 connection anyway (see the crate's layer docs).
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    let mut shutdown = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of descriptors, say: back off instead of spinning.
                        tracing::warn!(%err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // The make-service decides: admitted, or a service that answers 429.
                let service = make_service.ready().await?.call(peer).await?;
                let connection = builder
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                    .into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(err) = connection.await {
                        tracing::debug!(%peer, %err, "connection error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    tracing::info!(open = limiter.stats().open_connections, "draining");
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(Duration::from_secs(10)) => tracing::warn!("drain deadline passed"),
    }
    tracing::info!(open = limiter.stats().open_connections, "stopped");
    Ok(())
}
