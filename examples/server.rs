//! A real axum server with per-client limits, at the listener or at the make-service.
//!
//! ```text
//! cargo run --example server -- --addr 127.0.0.1:3000 --max-per-client 10 \
//!     [--max-total N] [--max-requests N] [--mode listener|make-service] [--reject close|reset|http] \
//!     [--handshake-timeout SECS] [--idle-timeout SECS] [--min-rate BYTES_PER_SEC] \
//!     [--trusted-proxy CIDR]... [--proxy-protocol] [--client-ip-header forwarded|x-forwarded-for|x-real-ip]
//! ```
//!
//! The deadlines (`--handshake-timeout`, `--idle-timeout`, `--min-rate` with a 10 s grace) and
//! `--proxy-protocol` act at the listener (`--mode listener`); `--client-ip-header` at the
//! request level (with `--max-requests`). Both trust only the `--trusted-proxy` networks.
//!
//! Routes:
//! - `/`            hello
//! - `/slow?ms=N`   holds the response N milliseconds (at most 60 000)
//! - `/ws`          WebSocket echo
//! - `/stats`       the limiter's stats as JSON, with the open connections of every client
//!
//! It speaks HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on the same port, and Ctrl-C shuts
//! it down gracefully. Try it from several loopback addresses:
//!
//! ```text
//! curl --interface 127.0.0.2 http://127.0.0.1:3000/
//! curl --http2-prior-knowledge http://127.0.0.1:3000/stats
//! ```
//!
//! `/stats` is itself a request on a connection, so the client asking is counted in its answer.

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
    Config, ConnLimitLayer, ConnLimitListener, Limiter, MinReceiveRate, ProxyProtocol, RejectAction,
};
use tower_layer::Layer;

const USAGE: &str = "usage: server [--addr ADDR] [--max-per-client N] [--max-total N] \
[--max-requests N] [--mode listener|make-service] [--reject close|reset|http] \
[--handshake-timeout SECS] [--idle-timeout SECS] [--min-rate BYTES_PER_SEC] [--trusted-proxy CIDR]... \
[--proxy-protocol] [--client-ip-header forwarded|x-forwarded-for|x-real-ip]";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Listener,
    MakeService,
}

#[derive(Debug)]
struct Args {
    addr: SocketAddr,
    config: Config,
    mode: Mode,
    reject: RejectAction,
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
                parsed.config.handshake_timeout = Duration::from_secs(number(value()?)? as u64)
            }
            "--idle-timeout" => {
                parsed.config.idle_timeout = Duration::from_secs(number(value()?)? as u64)
            }
            "--min-rate" => {
                let rate =
                    u32::try_from(number(value()?)?).map_err(|_| format!("{flag}: too large"))?;
                parsed.config.min_receive_rate =
                    Some(MinReceiveRate::new(rate, Duration::from_secs(10)));
            }
            "--trusted-proxy" => {
                let v = value()?;
                let network = v.parse().map_err(|e| format!("--trusted-proxy: {e}"))?;
                parsed.config.trusted_proxies.push(network);
            }
            "--proxy-protocol" => parsed.config.proxy_protocol = ProxyProtocol::Required,
            "--client-ip-header" => {
                let v = value()?;
                parsed.config.client_ip_header =
                    v.parse().map_err(|e| format!("--client-ip-header: {e}"))?;
            }
            "--mode" => {
                parsed.mode = match value()?.as_str() {
                    "listener" => Mode::Listener,
                    "make-service" => Mode::MakeService,
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
    match serve(args, limiter).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("server error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args, limiter: Limiter) -> std::io::Result<()> {
    // The request layer shares the limiter, so `--max-requests` and the connection limits
    // count against one view of each client.
    let app = Router::new()
        .route("/", get(|| async { "hello from tower-connlimit\n" }))
        .route("/slow", get(slow))
        .route("/ws", get(websocket))
        .route("/stats", get(stats))
        .layer(ConnLimitLayer::with_limiter(limiter.clone()))
        .with_state(limiter.clone());

    let tcp = TcpListener::bind(args.addr).await?;
    tracing::info!(
        addr = %tcp.local_addr()?,
        mode = ?args.mode,
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

/// How long Ctrl-C waits for open connections to finish before closing them.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

async fn shutdown_signal(stopping: Arc<Notify>) {
    if tokio::signal::ctrl_c().await.is_ok() {
        tracing::info!("Ctrl-C: finishing open requests (at most 10 s), then exiting");
        stopping.notify_one();
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
    let mut clients = limiter.clients();
    clients.sort_by_key(|c| std::cmp::Reverse(c.open_connections));
    Json(json!({
        "open_connections": stats.open_connections,
        "in_flight_requests": stats.in_flight_requests,
        "tracked_clients": stats.tracked_clients,
        "admitted_connections": stats.admitted_connections,
        "admitted_requests": stats.admitted_requests,
        "rejected": {
            "client_connections": stats.rejected.client_connections,
            "total_connections": stats.rejected.total_connections,
            "client_requests": stats.rejected.client_requests,
            "no_client_address": stats.rejected.no_client_address,
            "proxy_untrusted": stats.rejected.proxy_untrusted,
            "proxy_header_invalid": stats.rejected.proxy_header_invalid,
            "proxy_header_timeout": stats.rejected.proxy_header_timeout,
            "total": stats.rejected.total(),
        },
        "timeouts": {
            "handshake": stats.timeouts.handshake,
            "idle": stats.timeouts.idle,
            "min_receive_rate": stats.timeouts.min_receive_rate,
        },
        "config": {
            "max_conns_per_client": config.max_conns_per_client,
            "max_conns_total": config.max_conns_total,
            "max_requests_per_client": config.max_requests_per_client,
        },
        "clients": clients.iter().map(|c| json!({
            "client": c.key.to_string(),
            "open_connections": c.open_connections,
            "in_flight_requests": c.in_flight_requests,
        })).collect::<Vec<_>>(),
    }))
}
