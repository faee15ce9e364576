//! A tonic gRPC server (the standard health service) with both of tonic's admission points on
//! one `Limiter`: connections at the incoming stream, calls at the layer.
//!
//! ```text
//! cargo run --example tonic --features tonic -- [--addr 127.0.0.1:50051] [--max-per-client 4] \
//!     [--max-requests-per-client 8] [--max-total N] [--key-metadata x-api-key]
//! ```
//!
//! - `--max-per-client`: concurrent connections per client IP. `ConnLimitListener` wraps tonic's
//!   `TcpIncoming`, so a client's fifth connection is closed before tonic reads a byte of it (no
//!   HTTP/2 preface, no TLS handshake had there been one).
//! - `--max-requests-per-client`: concurrent calls per client IP, across all its connections.
//!   `ConnLimitLayer` in `Server::builder().layer(..)` answers a refused call with a gRPC status,
//!   `RESOURCE_EXHAUSTED` (8), and a streaming call (`Watch`) counts until its stream ends.
//! - `--key-metadata NAME`: calls are keyed by that metadata value (an API key, a tenant) when
//!   they carry it, and by the client's address otherwise: `--max-requests-per-client` is then
//!   each key's limit (gRPC metadata are HTTP/2 headers, so `KeySource::header` reads them).
//! - `--max-total`: connections across all clients (0, the default, is unlimited); past it, new
//!   connections are closed at accept too.
//!
//! Refused connections are reset, so a tonic client on one sees its call fail with
//! `UNAVAILABLE`, which standard retry policies retry (closed, it would see `CANCELLED`); a
//! refused call on an admitted connection gets a status and leaves the connection open for the
//! client's other calls.
//!
//! Both points share one limiter, and neither counts what the other does: connections count
//! against the first limit, calls against the second. The limiter's stats are logged every 10 s
//! when they have changed, and once more on exit. Ctrl-C stops accepting and lets open calls
//! finish for at most 10 s.
//!
//! The service is `grpc.health.v1.Health` from `tonic-health`, so no protoc is needed. Any gRPC
//! client can call it, for example (optional tools, not needed to build or run the example):
//!
//! ```text
//! grpc_health_probe -addr=127.0.0.1:50051
//! grpcurl -plaintext -import-path DIR -proto health.proto \
//!     127.0.0.1:50051 grpc.health.v1.Health/Check
//! ```
//!
//! The server offers no reflection service, so `grpcurl` needs the `health.proto` file: take it
//! from `grpc/grpc-proto` (`grpc/health/v1/health.proto`) or from the `tonic-health` crate's
//! sources (`proto/health.proto`), and pass its directory as `DIR`. `grpc_health_probe` (from
//! `grpc-ecosystem/grpc-health-probe`) knows the health service already. With neither, `curl`
//! will do: the five bytes are an empty `HealthCheckRequest` in gRPC's framing, and the headers
//! and trailers it prints end in `grpc-status: 0` for an answered call, or `grpc-status: 8` and
//! a generic `grpc-message` for a refused one.
//!
//! ```text
//! printf '\0\0\0\0\0' | curl -s -D - -o /dev/null --http2-prior-knowledge \
//!     -H 'content-type: application/grpc' --data-binary @- \
//!     http://127.0.0.1:50051/grpc.health.v1.Health/Check
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::MissedTickBehavior;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tower_connlimit::{
    layer::KeySource, listener::RejectAction, Config, ConnLimitLayer, ConnLimitListener, Limiter,
    Stats,
};

/// A tonic gRPC server with per-client connection and call limits.
#[derive(Debug, clap::Parser)]
#[command(name = "tonic")]
struct Args {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: SocketAddr,
    /// Connections one client may hold (0: unlimited).
    #[arg(long, default_value_t = 4, value_name = "N")]
    max_per_client: usize,
    /// Calls one client may have in flight, across its connections (0: unlimited).
    #[arg(long, default_value_t = 8, value_name = "N")]
    max_requests_per_client: usize,
    /// Connections across all clients (0: unlimited).
    #[arg(long, default_value_t = 0, value_name = "N")]
    max_total: usize,
    /// Key calls by this metadata value (such as x-api-key), falling back to the address.
    #[arg(long, value_name = "NAME")]
    key_metadata: Option<http::HeaderName>,
}

/// How long Ctrl-C waits for open calls to finish before exiting.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_connlimit=debug".into()),
        )
        .init();
    let args = <Args as clap::Parser>::parse();
    let (addr, max_conns_per_client, max_requests_per_client, max_conns_total) = (
        args.addr,
        args.max_per_client,
        args.max_requests_per_client,
        args.max_total,
    );

    let limiter = Limiter::try_new(Config {
        max_conns_per_client,
        max_requests_per_client,
        max_conns_total,
        ..Config::default()
    })?;

    // The reporter must live as long as the server: dropping it leaves the statuses as they are,
    // but it is how a real server would mark itself `NOT_SERVING`.
    let (_reporter, health) = tonic_health::server::health_reporter();

    // `serve_with_incoming` ignores the builder's TCP settings (`tcp_nodelay`, `tcp_keepalive`):
    // they are set on the incoming stream instead.
    let incoming = TcpIncoming::bind(addr)?.with_nodelay(Some(true));
    tracing::info!(
        addr = %incoming.local_addr()?,
        max_conns_per_client,
        max_requests_per_client,
        max_conns_total,
        "listening (gRPC over h2c)"
    );
    // Refused with a reset, a tonic client's call fails with `UNAVAILABLE`, which standard
    // retry policies retry (closed, it would be `CANCELLED`).
    let incoming =
        ConnLimitListener::from_stream(incoming, limiter.clone()).reject_with(RejectAction::Reset);

    let mut calls = ConnLimitLayer::with_limiter(limiter.clone());
    if let Some(name) = args.key_metadata.clone() {
        calls = calls.keyed_by(KeySource::header(name));
    }
    let stats = tokio::spawn(log_stats(limiter.clone()));
    let stopping = Arc::new(Notify::new());
    let served = Server::builder()
        .layer(calls)
        .add_service(health)
        .serve_with_incoming_shutdown(incoming, shutdown_signal(Arc::clone(&stopping)));
    // Graceful shutdown waits for every open connection; a client holding a `Watch` stream open
    // must not keep the process alive forever.
    let drain_deadline = async {
        stopping.notified().await;
        tokio::time::sleep(DRAIN_DEADLINE).await;
    };
    tokio::select! {
        result = served => result?,
        () = drain_deadline => tracing::warn!(
            still_open = limiter.stats().open_connections,
            "drain deadline passed; closing the remaining connections"
        ),
    }
    stats.abort();
    log_summary("stopped", &limiter.stats());
    Ok(())
}

async fn shutdown_signal(stopping: Arc<Notify>) {
    if tokio::signal::ctrl_c().await.is_ok() {
        tracing::info!("Ctrl-C: finishing open calls (at most 10 s), then exiting");
        stopping.notify_one();
    }
}

/// Logs the limiter's stats every 10 s, when they have changed since the last time.
async fn log_stats(limiter: Limiter) {
    let mut every = tokio::time::interval(Duration::from_secs(10));
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    every.tick().await; // the first tick is immediate
    let mut last = limiter.stats();
    loop {
        every.tick().await;
        let now = limiter.stats();
        if now != last {
            log_summary("stats", &now);
            last = now;
        }
    }
}

fn log_summary(message: &str, stats: &Stats) {
    tracing::info!(
        open_connections = stats.open_connections,
        in_flight_calls = stats.in_flight_requests,
        tracked_clients = stats.tracked_clients,
        admitted_connections = stats.admitted_connections,
        admitted_calls = stats.admitted_requests,
        refused_connections = stats.rejected["client_connections"],
        refused_calls = stats.rejected["client_requests"],
        refused_server_full =
            stats.rejected["total_connections"] + stats.rejected["tracked_clients_full"],
        refused_total = stats.rejected.total(),
        "{message}"
    );
}
