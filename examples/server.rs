//! A real axum server with per-client limits, at the listener or at the make-service.
//!
//! ```text
//! cargo run --example server -- --addr 127.0.0.1:3000 --max-per-client 10 \
//!     [--max-total N] [--max-requests N] [--mode listener|make-service|off] [--reject close|reset|http] \
//!     [--handshake-timeout SECS] [--idle-timeout SECS] [--min-rate BYTES_PER_SEC] \
//!     [--trusted-proxy CIDR]... [--proxy-protocol] \
//!     [--client-ip-header forwarded|x-forwarded-for|x-real-ip] [--metrics]
//! ```
//!
//! `--mode off` serves the same routes with no limiter at all, for `scripts/e2e.sh` to compare.
//!
//! The deadlines (`--handshake-timeout`, `--idle-timeout`, `--min-rate` with a 10 s grace) and
//! `--proxy-protocol` act at the listener (`--mode listener`); `--client-ip-header` at the
//! request level (with `--max-requests`). Both trust only the `--trusted-proxy` networks.
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
use tower_connlimit::{
    ByReason, ClientIp, Config, ConnLimitLayer, ConnLimitListener, Limiter, MinReceiveRate,
    ProxyProtocol, RejectAction,
};
use tower_layer::Layer;

const USAGE: &str = "usage: server [--addr ADDR] [--max-per-client N] [--max-total N] \
[--max-requests N] [--mode listener|make-service|off] [--reject close|reset|http] \
[--handshake-timeout SECS] [--idle-timeout SECS] [--min-rate BYTES_PER_SEC] [--trusted-proxy CIDR]... \
[--proxy-protocol] [--client-ip-header forwarded|x-forwarded-for|x-real-ip] \
[--metrics]";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Listener,
    MakeService,
    /// No limiter at all, for measuring what it costs (`scripts/e2e.sh`).
    Off,
}

#[derive(Debug)]
struct Args {
    addr: SocketAddr,
    config: Config,
    mode: Mode,
    reject: RejectAction,
    /// Serve Prometheus text on `/metrics`.
    metrics: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        addr: "127.0.0.1:3000".parse().unwrap(),
        config: Config {
            max_conns_per_client: 10,
            ..Config::default()
        },
        mode: Mode::Listener,
        reject: RejectAction::Close,
        metrics: false,
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| {
            v.parse::<usize>()
                .map_err(|_| format!("{flag}: {v:?} is not a whole number"))
        };
        match flag.as_str() {
            "--addr" => {
                let v = value()?;
                parsed.addr = v
                    .parse()
                    .map_err(|_| format!("--addr: {v:?} is not IP:PORT"))?;
            }
            "--max-per-client" => parsed.config.max_conns_per_client = number(value()?)?,
            "--max-total" => parsed.config.max_conns_total = number(value()?)?,
            "--max-requests" => parsed.config.max_requests_per_client = number(value()?)?,
            "--handshake-timeout" => {
                parsed.config.listener.handshake_timeout =
                    Duration::from_secs(number(value()?)? as u64)
            }
            "--idle-timeout" => {
                parsed.config.listener.idle_timeout = Duration::from_secs(number(value()?)? as u64)
            }
            "--min-rate" => {
                let rate =
                    u32::try_from(number(value()?)?).map_err(|_| format!("{flag}: too large"))?;
                parsed.config.listener.min_receive_rate =
                    Some(MinReceiveRate::new(rate, Duration::from_secs(10)));
            }
            "--trusted-proxy" => {
                let v = value()?;
                let network = v.parse().map_err(|e| format!("--trusted-proxy: {e}"))?;
                parsed.config.trusted_proxies.push(network);
            }
            "--proxy-protocol" => parsed.config.listener.proxy_protocol = ProxyProtocol::Required,
            "--metrics" => parsed.metrics = true,
            "--client-ip-header" => {
                let v = value()?;
                parsed.config.client_ip.header =
                    v.parse().map_err(|e| format!("--client-ip-header: {e}"))?;
            }
            "--mode" => {
                parsed.mode = match value()?.as_str() {
                    "listener" => Mode::Listener,
                    "make-service" => Mode::MakeService,
                    "off" => Mode::Off,
                    other => return Err(format!("--mode: unknown mode {other:?}")),
                }
            }
            "--reject" => {
                parsed.reject = match value()?.as_str() {
                    "close" => RejectAction::Close,
                    "reset" => RejectAction::Reset,
                    "http" => RejectAction::HttpResponse,
                    other => return Err(format!("--reject: unknown action {other:?}")),
                }
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(parsed)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_connlimit=debug".into()),
        )
        .init();
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let limiter = match Limiter::try_new(args.config.clone()) {
        Ok(limiter) => limiter,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(2);
        }
    };
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
    let app = routes().merge(metrics);
    // `--mode off` serves the same routes with no limiter anywhere, to measure what it costs.
    let app = match args.mode {
        Mode::Off => app,
        Mode::Listener | Mode::MakeService => {
            app.layer(ConnLimitLayer::with_limiter(limiter.clone()))
        }
    }
    .with_state(limiter.clone());

    let tcp = TcpListener::bind(args.addr).await?;
    tracing::info!(
        addr = %tcp.local_addr()?,
        mode = ?args.mode,
        metrics = args.metrics,
        max_conns_per_client = args.config.max_conns_per_client,
        max_conns_total = args.config.max_conns_total,
        max_requests_per_client = args.config.max_requests_per_client,
        "listening (HTTP/1.1 and h2c)"
    );
    let make_service = app.into_make_service_with_connect_info::<SocketAddr>();
    let stopping = Arc::new(Notify::new());
    let served = async {
        match args.mode {
            Mode::Listener => {
                let listener = ConnLimitListener::new(tcp, limiter.clone())
                    .reject_with(args.reject)
                    .for_axum();
                axum::serve(listener, make_service)
                    .with_graceful_shutdown(shutdown_signal(Arc::clone(&stopping)))
                    .await
            }
            Mode::MakeService => {
                let make_service =
                    ConnLimitLayer::with_limiter(limiter.clone()).layer(make_service);
                axum::serve(tcp, make_service)
                    .with_graceful_shutdown(shutdown_signal(Arc::clone(&stopping)))
                    .await
            }
            Mode::Off => {
                axum::serve(tcp, make_service)
                    .with_graceful_shutdown(shutdown_signal(Arc::clone(&stopping)))
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
/// serves them too): `/`, `/slow?ms=N`, the WebSocket echo `/ws`, `/stats` and `/ip`.
pub fn routes() -> Router<Limiter> {
    Router::new()
        .route("/", get(|| async { "hello from tower-connlimit\n" }))
        .route("/slow", get(slow))
        .route("/ws", get(websocket))
        .route("/stats", get(stats))
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
