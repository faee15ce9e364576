//! An app on a Unix socket behind a local reverse proxy, limited per client.
//!
//! ```text
//! cargo run --example unix -- [--path /tmp/tower-connlimit.sock] [--request-rate 10/1m]
//! curl --unix-socket /tmp/tower-connlimit.sock -H 'X-Forwarded-For: 203.0.113.7' http://x/
//! ```
//!
//! A Unix socket's peer has no IP address: the listener counts it as `127.0.0.1`, like a proxy on
//! loopback (see `listener::PeerAddr`). Here `127.0.0.1` is a trusted proxy, so its connections
//! are not capped as one client's, and the request layer reads each client from the
//! `X-Forwarded-For` header the proxy sets (nginx: `proxy_pass http://unix:/tmp/…sock;` with
//! `proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;`). A request that names no
//! client is held to the proxy's own allowance. `tests/unix.rs` runs it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use tower_connlimit::client_ip::{ClientIpConfig, ClientIpHeader};
use tower_connlimit::layer::ClientIp;
use tower_connlimit::serve::Serve;
use tower_connlimit::{Config, ConnLimitLayer, ConnLimitListener, Limiter, RateLimit};

/// The config: the local proxy trusted, each client named by `X-Forwarded-For` held to
/// `request_rate`.
pub fn config(request_rate: RateLimit) -> Config {
    Config {
        request_rate: Some(request_rate),
        trusted_proxies: vec!["127.0.0.1/32".parse().expect("a network")],
        client_ip: ClientIpConfig {
            header: ClientIpHeader::XForwardedFor,
            ..ClientIpConfig::default()
        },
        ..Config::default()
    }
}

/// A Unix socket at `path`, replacing a stale socket file.
pub fn listen(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    let _ = std::fs::remove_file(path);
    tokio::net::UnixListener::bind(path)
}

/// Serves the app on `unix` until the process ends; `GET /` answers with the client the
/// request was counted under.
pub async fn serve(unix: tokio::net::UnixListener, limiter: Limiter) -> std::io::Result<()> {
    let app = Router::new()
        .route(
            "/",
            get(|ClientIp(client): ClientIp| async move { format!("hello {client}\n") }),
        )
        .layer(ConnLimitLayer::with_limiter(limiter.clone()));
    Serve::new(ConnLimitListener::new(unix, limiter), app)
        .run()
        .await
}

/// An app on a Unix socket behind a local reverse proxy.
#[derive(Debug, clap::Parser)]
#[command(name = "unix")]
struct Args {
    /// Where the socket goes.
    #[arg(long, default_value = "/tmp/tower-connlimit.sock")]
    path: PathBuf,
    /// Requests per client: N/PERIOD.
    #[arg(long, default_value = "10/1m", value_parser = rate, value_name = "N/PERIOD")]
    request_rate: RateLimit,
}

/// `N/PERIOD`, such as `10/1m`.
fn rate(text: &str) -> Result<RateLimit, String> {
    let (n, period) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not N/PERIOD, such as 10/1m"))?;
    let n = n.parse().map_err(|_| format!("{n:?} is not a count"))?;
    let period: Duration = humantime::parse_duration(period)
        .map_err(|_| format!("{period:?} is not a period such as 1m"))?;
    Ok(RateLimit::new(n, period))
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = <Args as clap::Parser>::parse();
    let limiter = Limiter::try_new(config(args.request_rate))?;
    tracing::info!(path = %args.path.display(), "serving on a Unix socket");
    serve(listen(&args.path)?, limiter).await?;
    Ok(())
}
