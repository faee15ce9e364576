//! A real axum server with per-client limits, at the listener or at the make-service.
//!
//! ```text
//! cargo run --example server -- --addr 127.0.0.1:3000 --max-per-client 10 \
//!     [--max-total N] [--max-requests N] [--mode listener|make-service|off] [--reject close|reset|http] \
//!     [--handshake-timeout DURATION] [--idle-timeout DURATION] [--min-rate BYTES_PER_SEC] \
//!     [--header-timeout DURATION] [--trusted-proxy CIDR]... [--proxy-protocol] \
//!     [--client-ip-header forwarded|x-forwarded-for|x-real-ip] [--metrics] [--config FILE]
//! cargo run --example server -- --help
//! ```
//!
//! Durations are written `300ms`, `5s`, `2m` or `1h`, as in config files. `--mode listener`
//! (the default) serves with `tower_connlimit::serve::Serve`: every request's headers bounded by
//! `--header-timeout` (10 s), HTTP/2 streams bounded. `--mode off` serves the same routes the
//! same way with no limiter at all, for `scripts/e2e.sh` to compare; `--mode make-service`
//! counts connections in `ConnLimitLayer` around axum's make-service, served by `axum::serve`.
//!
//! The deadlines (`--handshake-timeout`, `--idle-timeout`, `--min-rate` with a 10 s grace) and
//! `--proxy-protocol` act at the listener (`--mode listener`); `--client-ip-header` at the
//! request level (with `--max-requests`). Both trust only the `--trusted-proxy` networks.
//! `--config FILE` takes the limits from a TOML or JSON file instead of the flags (feature
//! `serde`; `examples/config.toml` documents every field). With the `reload` feature it reloads
//! the file whenever it changes and on SIGHUP, keeping the running limits when an edit is
//! broken; with `serde` alone it reads the file once and says so at start-up.
//! `--admin ADDR --admin-token TOKEN` serves the admin API and live page on ADDR (feature
//! `admin`) and takes `/stats` off the public port; without it, `/stats` is public and the
//! server says so at start-up.
//! `--metrics` serves Prometheus text on `/metrics`; it needs the `metrics` feature:
//!
//! ```text
//! cargo run --example server --features metrics -- --metrics
//! curl http://127.0.0.1:3000/metrics
//! ```
//!
//! Routes:
//! - `/`            hello
//! - `/slow?ms=N`   holds the response N milliseconds (at most 60 000)
//! - `/ws`          WebSocket echo
//! - `/ip`          the client address the limiter counted, as plain text (behind a trusted
//!   proxy, the client it named)
//! - `/stats`       the limiter's stats as JSON: totals, refusals and early closes by reason,
//!   the figures of each admission point, and the ten clients holding the most connections
//! - `/metrics`     with `--metrics`: the limiter's metrics in Prometheus text, recorded at
//!   each scrape (the names are in the docs of `tower_connlimit::metrics`)
//!
//! It speaks HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on the same port, and Ctrl-C shuts
//! it down gracefully. Try it from several loopback addresses:
//!
//! ```text
//! curl --interface 127.0.0.2 http://127.0.0.1:3000/
//! curl --http2-prior-knowledge http://127.0.0.1:3000/stats
//! ```
//!
//! `/stats` and `/metrics` are themselves requests on a connection, so the client asking is
//! counted in their answers.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower_connlimit::serve::Serve;
use tower_connlimit::{
    BanPolicy, ByReason, Cidr, ClientIp, Config, ConnLimitLayer, ConnLimitListener, Limiter,
    MinReceiveRate, ProxyProtocol, RateLimit, RejectAction,
};
use tower_layer::Layer;

/// A real axum server with per-client limits, at the listener or at the make-service.
#[derive(Debug, clap::Parser)]
#[command(name = "server")]
struct Args {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
    /// Connections one client may hold (0: unlimited).
    #[arg(long, default_value_t = 10, value_name = "N")]
    max_per_client: usize,
    /// Connections across all clients (0: unlimited).
    #[arg(long, default_value_t = 0, value_name = "N")]
    max_total: usize,
    /// Requests one client may have in flight (0: unlimited).
    #[arg(long, default_value_t = 0, value_name = "N")]
    max_requests: usize,
    /// Where connections are counted; `off` serves the same routes with no limiter at all.
    #[arg(long, value_enum, default_value_t = Mode::Listener)]
    mode: Mode,
    /// What the listener does with a refused connection.
    #[arg(long, value_enum, default_value_t = Reject::Close)]
    reject: Reject,
    /// How long a connection may wait for its client's first byte (0s: off).
    #[arg(long, value_parser = duration, default_value = "0s", value_name = "DURATION")]
    handshake_timeout: Duration,
    /// How long a connection may go without a byte either way (0s: off).
    #[arg(long, value_parser = duration, default_value = "0s", value_name = "DURATION")]
    idle_timeout: Duration,
    /// The slowest a client may send during its first phase, after a 10 s grace.
    #[arg(long, value_name = "BYTES_PER_SEC")]
    min_rate: Option<u32>,
    /// How long every request's headers may take (HTTP/1 requests, HTTP/2 header blocks), with
    /// `--mode listener`.
    #[arg(long, value_parser = duration, default_value = "10s", value_name = "DURATION")]
    header_timeout: Duration,
    /// A proxy believed about the real client (PROXY headers, client address headers).
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    trusted_proxies: Vec<Cidr>,
    /// Expect a PROXY protocol header from every peer (which must be a trusted proxy).
    #[arg(long)]
    proxy_protocol: bool,
    /// The request header naming the client behind a trusted proxy.
    #[arg(long, value_parser = ["forwarded", "x-forwarded-for", "x-real-ip"])]
    client_ip_header: Option<String>,
    /// Serve Prometheus text on `/metrics` (feature `metrics`).
    #[arg(long)]
    metrics: bool,
    /// A request rate per client: N requests per SECS seconds (sliding window).
    #[arg(long, value_parser = request_rate, value_name = "N/SECS")]
    request_rate: Option<RateLimit>,
    /// A ban policy: more than VIOLATIONS refusals by a rate rule within WITHIN_SECS seconds
    /// bans the client for BAN_SECS seconds.
    #[arg(long, value_parser = ban_policy, value_name = "VIOLATIONS/WITHIN_SECS/BAN_SECS")]
    ban: Option<BanPolicy>,
    /// Join a fleet through this Redis: bans and rates shared with every node on it (feature
    /// `redis`).
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// This node's name in the fleet.
    #[arg(long, default_value = "node", value_name = "NAME", requires = "redis")]
    node: String,
    /// How often the node syncs with the fleet.
    #[arg(long, value_parser = duration, default_value = "100ms", value_name = "DURATION", requires = "redis")]
    sync_interval: Duration,
    /// Serve the admin API and live page on this address (feature `admin`), and take `/stats`
    /// off the public port.
    #[arg(long, value_name = "ADDR", requires = "admin_token")]
    admin: Option<SocketAddr>,
    /// The bearer token the admin API wants (recorded in its audit as `operator`).
    #[arg(long, value_name = "TOKEN", requires = "admin")]
    admin_token: Option<String>,
    /// The limits from a TOML or JSON file instead of the flags above (feature `serde`),
    /// reloaded whenever it changes and on SIGHUP (feature `reload`; without it, read once).
    #[arg(long, value_name = "FILE", conflicts_with_all = [
        "max_per_client", "max_total", "max_requests", "handshake_timeout", "idle_timeout",
        "min_rate", "trusted_proxies", "proxy_protocol", "client_ip_header", "request_rate", "ban",
    ])]
    config: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    Listener,
    MakeService,
    /// No limiter at all, for measuring what it costs (`scripts/e2e.sh`).
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Reject {
    Close,
    Reset,
    Http,
}

impl From<Reject> for RejectAction {
    fn from(reject: Reject) -> Self {
        match reject {
            Reject::Close => RejectAction::Close,
            Reject::Reset => RejectAction::Reset,
            Reject::Http => RejectAction::HttpResponse,
        }
    }
}

/// `N/SECS`: N requests per SECS seconds.
fn request_rate(text: &str) -> Result<RateLimit, String> {
    let (n, secs) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not N/SECS, such as 10/60"))?;
    let n = n
        .parse()
        .map_err(|_| format!("{n:?} is not a whole number"))?;
    let secs = secs
        .parse()
        .map_err(|_| format!("{secs:?} is not a whole number of seconds"))?;
    Ok(RateLimit::new(n, Duration::from_secs(secs)))
}

/// `VIOLATIONS/WITHIN_SECS/BAN_SECS`.
fn ban_policy(text: &str) -> Result<BanPolicy, String> {
    let parts: Vec<u64> = text
        .split('/')
        .map(|part| {
            part.parse()
                .map_err(|_| format!("{part:?} is not a whole number"))
        })
        .collect::<Result<_, _>>()?;
    let [violations, within, ban_for] = parts[..] else {
        return Err(format!(
            "{text:?} is not VIOLATIONS/WITHIN_SECS/BAN_SECS, such as 5/60/600"
        ));
    };
    let violations = u32::try_from(violations).map_err(|_| "too many violations".to_owned())?;
    Ok(BanPolicy::new(
        violations,
        Duration::from_secs(within),
        Duration::from_secs(ban_for),
    ))
}

/// A duration as `300ms`, `5s`, `2m` or `1h`: the one format of the examples and config files.
fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|_| format!("{text:?} is not a duration such as 300ms, 5s, 2m or 1h"))
}

impl Args {
    /// The config the flags describe (`--config` reads a file instead).
    fn config(&self) -> Result<Config, String> {
        if let Some(path) = &self.config {
            return config_file(path);
        }
        let mut config = Config {
            max_conns_per_client: self.max_per_client,
            max_conns_total: self.max_total,
            max_requests_per_client: self.max_requests,
            trusted_proxies: self.trusted_proxies.clone(),
            request_rate: self.request_rate,
            ban: self.ban,
            ..Config::default()
        };
        config.listener.handshake_timeout = self.handshake_timeout;
        config.listener.idle_timeout = self.idle_timeout;
        config.listener.min_receive_rate = self
            .min_rate
            .map(|rate| MinReceiveRate::new(rate, Duration::from_secs(10)));
        if self.proxy_protocol {
            config.listener.proxy_protocol = ProxyProtocol::Required;
        }
        if let Some(header) = &self.client_ip_header {
            config.client_ip.header = header
                .parse()
                .map_err(|e| format!("--client-ip-header: {e}"))?;
        }
        Ok(config)
    }
}

/// Reads `--config` once; [`watch_config`] reloads it with the `reload` feature.
#[cfg(feature = "serde")]
fn config_file(path: &std::path::Path) -> Result<Config, String> {
    Config::from_file(path).map_err(|err| format!("--config {}: {err}", path.display()))
}

#[cfg(not(feature = "serde"))]
fn config_file(_path: &std::path::Path) -> Result<Config, String> {
    Err(
        "--config needs the `serde` feature (and `reload` to reload the file when it changes): \
         rebuild with --features reload, as in\n  \
         cargo run --example server --features reload -- --config examples/config.toml"
            .to_owned(),
    )
}

/// The fleet `--redis` joined, for `/stats`.
#[cfg(feature = "redis")]
static FLEET: std::sync::OnceLock<tower_connlimit::fleet::Fleet> = std::sync::OnceLock::new();

/// Joins the fleet at `--redis`, if given.
#[cfg(feature = "redis")]
fn join_fleet(args: &Args, limiter: &Limiter) -> Result<(), String> {
    let Some(url) = &args.redis else {
        return Ok(());
    };
    let mut config = tower_connlimit::fleet::FleetConfig::new(url, &args.node);
    config.sync_interval = args.sync_interval;
    let fleet = tower_connlimit::fleet::Fleet::join(limiter, config)
        .map_err(|err| format!("--redis: {err}"))?;
    tracing::info!(node = %args.node, redis = %url, "joined the fleet: bans and rates shared");
    let _ = FLEET.set(fleet);
    Ok(())
}

#[cfg(not(feature = "redis"))]
fn join_fleet(args: &Args, _limiter: &Limiter) -> Result<(), String> {
    match args.redis {
        Some(_) => Err("--redis needs the `redis` feature: rebuild with --features redis, as in\n  \
                        cargo run --example server --features redis -- --redis redis://127.0.0.1:6379/"
            .to_owned()),
        None => Ok(()),
    }
}

/// Serves the admin API and page on `--admin`, in a task of its own.
#[cfg(feature = "admin")]
async fn serve_admin(args: &Args, limiter: &Limiter) -> Result<(), String> {
    let (Some(addr), Some(token)) = (args.admin, &args.admin_token) else {
        return Ok(());
    };
    let router = tower_connlimit::admin::Admin::new(limiter)
        .token("operator", token)
        .router()
        .map_err(|err| format!("--admin-token: {err}"))?;
    let tcp = TcpListener::bind(addr)
        .await
        .map_err(|err| format!("--admin {addr}: {err}"))?;
    tracing::info!(addr = %tcp.local_addr().map_err(|e| e.to_string())?, "admin API and live page");
    tokio::spawn(async move {
        let served = axum::serve(
            tcp,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
        if let Err(err) = served {
            tracing::error!(%err, "the admin listener failed");
        }
    });
    Ok(())
}

#[cfg(not(feature = "admin"))]
async fn serve_admin(args: &Args, _limiter: &Limiter) -> Result<(), String> {
    match args.admin {
        Some(_) => Err("--admin needs the `admin` feature: rebuild with --features admin, as in\n  \
                        cargo run --example server --features admin -- --admin 127.0.0.1:9000 --admin-token T"
            .to_owned()),
        None => Ok(()),
    }
}

/// The fleet's state for `/stats`: `null` without one.
fn fleet_state() -> Value {
    #[cfg(feature = "redis")]
    if let Some(fleet) = FLEET.get() {
        let status = fleet.status();
        return json!({
            "node": status.node,
            "connected": status.connected,
            "last_sync_age_ms": status.last_sync_age.map(|age| age.as_millis() as u64),
            "syncs": status.syncs,
            "sync_errors": status.sync_errors,
            "bans_published": status.bans_published,
            "bans_applied": status.bans_applied,
            "last_error": status.last_error,
        });
    }
    Value::Null
}

/// Reloads `--config` into the limiter on change and on SIGHUP, for as long as it is kept.
#[cfg(feature = "reload")]
fn watch_config(args: &Args, limiter: &Limiter) -> Result<Option<impl Drop>, String> {
    let Some(path) = &args.config else {
        return Ok(None);
    };
    let watcher = tower_connlimit::reload::watch(limiter, path)
        .map_err(|err| format!("--config {}: cannot watch it: {err}", path.display()))?;
    tracing::info!(path = %path.display(), "reloading the config on change and on SIGHUP");
    Ok(Some(watcher))
}

/// Without the `reload` feature, `--config` was read once: says so, since the flag's help
/// promises reloads.
#[cfg(not(feature = "reload"))]
fn watch_config(args: &Args, _limiter: &Limiter) -> Result<Option<()>, String> {
    if let Some(path) = &args.config {
        tracing::warn!(
            path = %path.display(),
            "the config was read once and will not be reloaded on change or SIGHUP: \
             rebuild with --features reload for that"
        );
    }
    Ok(None)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_connlimit=debug".into()),
        )
        .init();
    let args = <Args as clap::Parser>::parse();
    let limiter = match args
        .config()
        .and_then(|config| Limiter::try_new(config).map_err(|err| err.to_string()))
    {
        Ok(limiter) => limiter,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(2);
        }
    };
    let _watcher = match watch_config(&args, &limiter) {
        Ok(watcher) => watcher,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(2);
        }
    };
    if let Err(err) = join_fleet(&args, &limiter) {
        eprintln!("{err}");
        return ExitCode::from(2);
    }
    if let Err(err) = serve_admin(&args, &limiter).await {
        eprintln!("{err}");
        return ExitCode::from(2);
    }
    let metrics = if args.metrics {
        match metrics_route(limiter.clone()) {
            Ok(route) => route,
            Err(message) => {
                eprintln!("{message}");
                return ExitCode::from(2);
            }
        }
    } else {
        Router::new()
    };
    match serve(args, limiter, metrics).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("server error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args, limiter: Limiter, metrics: Router<Limiter>) -> std::io::Result<()> {
    // The request layer shares the limiter, so `--max-requests` and the connection limits
    // count against one view of each client.
    // With `--admin`, the stats are the admin API's; without it, `/stats` is public.
    let app = if args.admin.is_some() {
        base_routes()
    } else {
        tracing::warn!("/stats is served on the public port, to anyone: use --admin to move it");
        routes()
    }
    .merge(metrics);
    // `--mode off` serves the same routes with no limiter anywhere, to measure what it costs.
    let app = match args.mode {
        Mode::Off => app,
        Mode::Listener | Mode::MakeService => {
            app.layer(ConnLimitLayer::with_limiter(limiter.clone()))
        }
    }
    .with_state(limiter.clone());

    let tcp = TcpListener::bind(args.addr).await?;
    let config = limiter.config();
    tracing::info!(
        addr = %tcp.local_addr()?,
        mode = ?args.mode,
        metrics = args.metrics,
        max_conns_per_client = config.max_conns_per_client,
        max_conns_total = config.max_conns_total,
        max_requests_per_client = config.max_requests_per_client,
        "listening (HTTP/1.1 and h2c)"
    );
    let make_service = app
        .clone()
        .into_make_service_with_connect_info::<SocketAddr>();
    let stopping = Arc::new(Notify::new());
    let served = async {
        match args.mode {
            // Every request's headers bounded by `--header-timeout`, HTTP/2 streams bounded.
            Mode::Listener => {
                let listener =
                    ConnLimitListener::new(tcp, limiter.clone()).reject_with(args.reject.into());
                Serve::new(listener, app)
                    .header_timeout(args.header_timeout)
                    .drain_deadline(DRAIN_DEADLINE)
                    .run_until(shutdown_signal(Arc::clone(&stopping)))
                    .await
            }
            Mode::MakeService => {
                let make_service =
                    ConnLimitLayer::with_limiter(limiter.clone()).layer(make_service);
                axum::serve(tcp, make_service)
                    .with_graceful_shutdown(shutdown_signal(Arc::clone(&stopping)))
                    .await
            }
            // The same server as `listener`, with no limiter anywhere.
            Mode::Off => {
                Serve::new(tcp, app)
                    .header_timeout(args.header_timeout)
                    .drain_deadline(DRAIN_DEADLINE)
                    .run_until(shutdown_signal(Arc::clone(&stopping)))
                    .await
            }
        }
    };
    // Graceful shutdown waits for every open connection; a client that never leaves (an idle
    // WebSocket, say) must not keep the process alive forever.
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
    tracing::info!(
        open_connections = limiter.stats().open_connections,
        "stopped"
    );
    Ok(())
}

/// `GET /metrics`: installs the Prometheus recorder and answers every scrape with the limiter's
/// figures as of that scrape.
#[cfg(feature = "metrics")]
fn metrics_route(limiter: Limiter) -> Result<Router<Limiter>, String> {
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|err| format!("--metrics: {err}"))?;
    tower_connlimit::metrics::describe_metrics();
    let scrape = move || {
        limiter.record_metrics();
        let body = prometheus.render();
        async move {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4",
                )],
                body,
            )
        }
    };
    Ok(Router::new().route("/metrics", get(scrape)))
}

#[cfg(not(feature = "metrics"))]
fn metrics_route(_limiter: Limiter) -> Result<Router<Limiter>, String> {
    Err(
        "--metrics needs the `metrics` feature: rebuild with --features metrics, as in\n  \
         cargo run --example server --features metrics -- --metrics"
            .to_owned(),
    )
}

/// How long Ctrl-C waits for open connections to finish before closing them.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

async fn shutdown_signal(stopping: Arc<Notify>) {
    if tokio::signal::ctrl_c().await.is_ok() {
        tracing::info!("Ctrl-C: finishing open requests (at most 10 s), then exiting");
        stopping.notify_one();
    }
}

/// The example's routes, with the limiter as state and no limiter layer yet (tests/hostile.rs
/// serves them too): `/`, `/slow?ms=N`, the WebSocket echo `/ws`, `/ip`, and `/stats`.
pub fn routes() -> Router<Limiter> {
    base_routes().route("/stats", get(stats))
}

/// The routes but `/stats`, for a server whose stats are on the admin port.
pub fn base_routes() -> Router<Limiter> {
    Router::new()
        .route("/", get(|| async { "hello from tower-connlimit\n" }))
        .route("/slow", get(slow))
        .route("/ws", get(websocket))
        .route("/ip", get(client_ip))
}

/// `GET /ip`: the client address the limiter counted this request under, as plain text: behind
/// a `--trusted-proxy` with `--client-ip-header`, the client the proxy named; otherwise the
/// peer (also with `--mode off`, where nothing counts).
async fn client_ip(request: axum::extract::Request) -> String {
    let extensions = request.extensions();
    match extensions.get::<ClientIp>() {
        Some(ClientIp(ip)) => format!("{ip}\n"),
        None => match extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
            Some(info) => format!("{}\n", info.0.ip()),
            None => "unknown\n".to_owned(),
        },
    }
}

#[derive(serde::Deserialize)]
struct SlowParams {
    ms: Option<u64>,
}

async fn slow(Query(params): Query<SlowParams>) -> String {
    let ms = params.ms.unwrap_or(1000).min(60_000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    format!("slept {ms} ms\n")
}

async fn websocket(ws: WebSocketUpgrade) -> axum::response::Response {
    ws.on_upgrade(echo)
}

async fn echo(mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        let reply = match message {
            Message::Text(_) | Message::Binary(_) => message,
            Message::Close(_) => break,
            _ => continue,
        };
        if socket.send(reply).await.is_err() {
            break;
        }
    }
}

async fn stats(State(limiter): State<Limiter>) -> Json<Value> {
    let stats = limiter.stats();
    let config = limiter.config();
    // Counts with their stable names, the zeros left out.
    let counts = |by_reason: &ByReason| -> Value {
        let named = by_reason.iter().filter(|(_, n)| *n > 0);
        Value::Object(
            named
                .map(|(reason, n)| (reason.to_owned(), n.into()))
                .collect(),
        )
    };
    let points: serde_json::Map<String, Value> = stats
        .points
        .iter()
        .map(|figures| {
            let value = json!({
                "open_connections": figures.open_connections,
                "in_flight_requests": figures.in_flight_requests,
                "admitted": figures.admitted,
                "rejected": counts(&figures.rejected),
                "closed": counts(&figures.closed),
            });
            (figures.point.name().to_owned(), value)
        })
        .collect();
    Json(json!({
        "open_connections": stats.open_connections,
        "in_flight_requests": stats.in_flight_requests,
        "tracked_clients": stats.tracked_clients,
        "admitted_connections": stats.admitted_connections,
        "admitted_requests": stats.admitted_requests,
        "rejected": counts(&stats.rejected),
        "rejected_total": stats.rejected.total(),
        "closed": counts(&stats.closed),
        "bans": stats.bans,
        "evictions": stats.evictions,
        "points": points,
        "fleet": fleet_state(),
        "config": {
            "max_conns_per_client": config.max_conns_per_client,
            "max_conns_total": config.max_conns_total,
            "max_requests_per_client": config.max_requests_per_client,
        },
        // Who holds the most: the first place to look near the limits.
        "top_clients": limiter.top_clients(10).iter().map(|c| json!({
            "client": c.key.to_string(),
            "open_connections": c.open_connections,
            "in_flight_requests": c.in_flight_requests,
            "banned_for_secs": c.banned_for.map(|d| d.as_secs()),
        })).collect::<Vec<_>>(),
    }))
}
