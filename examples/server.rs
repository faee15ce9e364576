//! A real axum server with per-client limits, at the listener or at the make-service.
//!
//! ```text
//! cargo run --example server -- --addr 127.0.0.1:3000 --max-per-client 10 \
//!     [--max-total N] [--max-requests N] [--mode listener|make-service|off] [--reject close|reset|http] \
//!     [--request-rate N/PERIOD] [--ban VIOLATIONS/WITHIN/BAN_FOR] \
//!     [--handshake-timeout DURATION] [--idle-timeout DURATION] [--min-rate BYTES_PER_SEC] \
//!     [--header-timeout DURATION] [--trusted-proxy CIDR]... [--proxy-protocol] \
//!     [--client-ip-header forwarded|x-forwarded-for|x-real-ip] [--trusted-hops N] \
//!     [--key-header NAME] [--ratelimit-headers] \
//!     [--metrics] [--config FILE] [--admin ADDR --admin-token TOKEN]
//!     [--redis URL | --redis-cluster URL,URL,...] [--node NAME] [--redis-ca-file FILE]
//! cargo run --example server -- --help
//! ```
//!
//! Durations are written `300ms`, `5s`, `2m` or `1h`, as in config files. `--mode listener`
//! (the default) serves with `tower_connlimit::serve::Serve`: every request's headers bounded by
//! `--header-timeout` (10 s), HTTP/2 streams bounded. `--mode off` serves the same routes the
//! same way with no limiter at all, for `scripts/e2e.sh` to compare; `--mode make-service`
//! counts connections in `ConnLimitLayer` around axum's make-service, served by `axum::serve`.
//!
//! `--request-rate N/PERIOD` allows each client N requests per PERIOD (a sliding window):
//! `5/500ms`, `100/1m`, `10/60s`; a bare number is seconds, so `10/60` is 10 a minute and `5/0.5`
//! 5 per half second. `--ban VIOLATIONS/WITHIN/BAN_FOR` bans for BAN_FOR a client refused by a
//! rate more than VIOLATIONS times within WITHIN: `5/1m/10m`, or `5/60/600` in seconds.
//!
//! The deadlines (`--handshake-timeout`, `--idle-timeout`, `--min-rate` with a 10 s grace) and
//! `--proxy-protocol` act at the listener (`--mode listener`); `--client-ip-header` at the
//! request level (with `--max-requests`). Both trust only the `--trusted-proxy` networks.
//! `--trusted-hops N` (default 1, with `--client-ip-header`) says how many trusted proxies stand
//! in front, each adding one entry to the header: behind a CDN and a load balancer, 2.
//! `--key-header NAME` (such as `x-api-key`) keys requests by that header, falling back to the
//! address for requests without it: `--request-rate` and `--max-requests` are then each key's
//! limits, and what one address may do whatever its keys (`keys.max_requests_per_address`,
//! `keys.request_rate_per_address`), and tiers of limits, come from `--config`. Keys are kept
//! as fingerprints, `key:` and 16 hex digits, as stats and logs show them.
//! `--ratelimit-headers` sends the IETF's `RateLimit-Policy` and `RateLimit` fields on every
//! response at the request level, so that a client can see its quota (`curl -i`).
//! `--config FILE` takes the limits from a TOML or JSON file instead of the flags (feature
//! `serde`; `examples/config.toml` documents every field). With the `reload` feature it reloads
//! the file whenever it changes and on SIGHUP, keeping the running limits when an edit is
//! broken; with `serde` alone it reads the file once and says so at start-up. Fair share
//! (`[fair_share]`, `max_requests_total`) comes from the file too; under `--mode listener` (the
//! default) idle connections of the heaviest clients are given back to the lighter ones.
//! `--admin ADDR --admin-token TOKEN` serves the admin API and live page on ADDR (feature
//! `admin`) and takes `/stats` off the public port; without it, `/stats` is public and the
//! server says so at start-up.
//!
//! Logs go to stdout at `info` unless `RUST_LOG` says otherwise. At start-up one line gives the
//! limits in force. While clients are refused, one line every 10 s for each reason says how
//! many were refused (or closed early by a deadline) and which flag governs it: the default
//! `--max-per-client 10` is what a benchmark such as `wrk -c32` or `h2load -c50` from one
//! address runs into, and this line says so. The crate itself logs every refusal at `debug`,
//! which is not the default: under a flood, the very case a limiter is for, that is a line per
//! refused connection, costing more than the refusal and burying everything else, while the
//! per-reason lines and the crate's own `warn` summary (every 10 s) say what matters.
//! `RUST_LOG=info,tower_connlimit=debug` shows each refusal with its client.
//!
//! `--redis URL` (or `--redis-cluster URL,URL,...`, a Redis Cluster's seed nodes) joins a
//! fleet (feature `redis`): bans and rates shared with every node on it. Each node needs a name
//! of its own (`--node`, by default the host's name and the port): a name another live node
//! holds is refused at start-up. A wrong password is refused at start-up too; a Redis that
//! cannot be reached is not: the server starts on its local limits and joins when Redis
//! answers. `rediss://` URLs need the `redis-tls` feature, and `--redis-ca-file` for a private
//! CA. Passwords in URLs are never printed.
//!
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
use tower_connlimit::layer::KeySource;
use tower_connlimit::serve::Serve;
use tower_connlimit::{
    ban::BanPolicy, client_ip::ClientIpHeader, layer::ClientIp, listener::MinReceiveRate,
    listener::ProxyProtocol, listener::RejectAction, stats::ByReason, Cidr, Config, ConnLimitLayer,
    ConnLimitListener, Limiter, RateLimit,
};
use tower_layer::Layer;

/// A real axum server with per-client limits, at the listener or at the make-service.
#[derive(Debug, clap::Parser)]
#[command(name = "server")]
pub struct Args {
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
    /// How many trusted proxies stand in front of the server, each adding one entry to
    /// `--client-ip-header`: the client is that many entries from the right.
    #[arg(
        long,
        default_value_t = 1,
        value_name = "N",
        requires = "client_ip_header"
    )]
    trusted_hops: usize,
    /// Serve Prometheus text on `/metrics` (feature `metrics`).
    #[arg(long)]
    metrics: bool,
    /// A request rate per client: N requests per PERIOD (sliding window), such as 5/500ms,
    /// 100/1m or 10/60s; a bare PERIOD is seconds (10/60).
    #[arg(long, value_parser = request_rate, value_name = "N/PERIOD")]
    request_rate: Option<RateLimit>,
    /// A ban policy: more than VIOLATIONS refusals by a rate rule within WITHIN bans the client
    /// for BAN_FOR, such as 5/1m/10m; bare numbers are seconds (5/60/600).
    #[arg(long, value_parser = ban_policy, value_name = "VIOLATIONS/WITHIN/BAN_FOR")]
    ban: Option<BanPolicy>,
    /// Key requests by this header (such as x-api-key), falling back to the address: the
    /// request limits are then each key's; tiers and limits per address come from --config.
    #[arg(long, value_name = "NAME")]
    key_header: Option<http::HeaderName>,
    /// Send the RateLimit-Policy and RateLimit fields (draft-ietf-httpapi-ratelimit-headers) on
    /// every response at the request level.
    #[arg(long)]
    ratelimit_headers: bool,
    /// Join a fleet through this Redis: bans and rates shared with every node on it (feature
    /// `redis`).
    #[arg(long, value_name = "URL", conflicts_with = "redis_cluster")]
    redis: Option<String>,
    /// Join a fleet through this Redis Cluster, given by some of its nodes (feature `redis`).
    #[arg(long, value_name = "URL,URL,...", value_delimiter = ',')]
    redis_cluster: Vec<String>,
    /// This node's name in the fleet, unique in it [default: the host's name and the port].
    #[arg(long, value_name = "NAME")]
    node: Option<String>,
    /// How often the node syncs with the fleet.
    #[arg(long, value_parser = duration, default_value = "100ms", value_name = "DURATION")]
    sync_interval: Duration,
    /// A PEM file of the CA certificates to trust for `rediss://` (feature `redis-tls`).
    #[arg(long, value_name = "FILE")]
    redis_ca_file: Option<std::path::PathBuf>,
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
        "min_rate", "trusted_proxies", "proxy_protocol", "client_ip_header", "trusted_hops",
        "request_rate", "ban",
    ])]
    config: Option<std::path::PathBuf>,
}

/// Where connections are counted (`--mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// At accept, in `ConnLimitListener`, with the deadlines; served by `Serve`.
    Listener,
    /// In `ConnLimitLayer` around axum's make-service; served by `axum::serve`.
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

/// `N/PERIOD`: N requests per PERIOD, such as `5/500ms` or `10/60` (seconds).
fn request_rate(text: &str) -> Result<RateLimit, String> {
    const WRITE: &str = "write N/PERIOD, such as 5/500ms, 100/1m or 10/60 (seconds)";
    let (n, per) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not N/PERIOD: {WRITE}"))?;
    let n = n
        .parse()
        .map_err(|_| format!("{n:?} is not a whole number of requests: {WRITE}"))?;
    let per = period(per).map_err(|err| format!("{err}: {WRITE}"))?;
    Ok(RateLimit::new(n, per))
}

/// `VIOLATIONS/WITHIN/BAN_FOR`, such as `5/1m/10m` or `5/60/600` (seconds).
fn ban_policy(text: &str) -> Result<BanPolicy, String> {
    const WRITE: &str = "write VIOLATIONS/WITHIN/BAN_FOR, such as 5/1m/10m or 5/60/600 (seconds)";
    let [violations, within, ban_for] = text.split('/').collect::<Vec<_>>()[..] else {
        return Err(format!(
            "{text:?} is not VIOLATIONS/WITHIN/BAN_FOR: {WRITE}"
        ));
    };
    let violations = violations
        .parse()
        .map_err(|_| format!("{violations:?} is not a whole number of violations: {WRITE}"))?;
    let within = period(within).map_err(|err| format!("WITHIN {err}: {WRITE}"))?;
    let ban_for = period(ban_for).map_err(|err| format!("BAN_FOR {err}: {WRITE}"))?;
    Ok(BanPolicy::new(violations, within, ban_for))
}

/// A period in a rate or a ban: a duration (`500ms`, `60s`, `1m`), or a bare number of seconds
/// (`60`, `0.5`), which is what these flags took before they took durations.
fn period(text: &str) -> Result<Duration, String> {
    match seconds(text) {
        Some(period) => Ok(period),
        None => duration(text).map_err(|_| {
            format!("{text:?} is not a duration (500ms, 10s, 1m) or a number of seconds (60, 0.5)")
        }),
    }
}

/// A bare number of seconds, whole or with up to nine decimals (`60`, `0.5`), exactly: no
/// floating point on the way.
fn seconds(text: &str) -> Option<Duration> {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) if !fraction.is_empty() => (whole, fraction),
        Some(_) => return None,
        None => (text, ""),
    };
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 9 {
        return None;
    }
    let nanos = format!("{fraction:0<9}").parse().ok()?;
    Some(Duration::new(whole.parse().ok()?, nanos))
}

/// A duration as `300ms`, `5s`, `2m` or `1h`: the one format of the examples and config files.
fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|_| format!("{text:?} is not a duration such as 300ms, 5s, 2m or 1h"))
}

impl Args {
    /// The request level's layer: keyed by `--key-header`, with `--ratelimit-headers`.
    fn request_layer(&self, limiter: &Limiter) -> ConnLimitLayer {
        let mut layer = ConnLimitLayer::with_limiter(limiter.clone());
        if let Some(name) = &self.key_header {
            layer = layer.keyed_by(KeySource::header(name.clone()));
        }
        if self.ratelimit_headers {
            layer = layer.ratelimit_headers();
        }
        layer
    }

    /// The config the flags describe (`--config` reads a file instead).
    pub fn config(&self) -> Result<Config, String> {
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
        // Checked with the rest by `Config::validate`, which names `client_ip.trusted_hops`.
        config.client_ip.trusted_hops = self.trusted_hops;
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

/// Joins the fleet at `--redis` or `--redis-cluster`, if given.
#[cfg(feature = "redis")]
async fn join_fleet(args: &Args, limiter: &Limiter) -> Result<(), String> {
    use tower_connlimit::fleet::{Fleet, FleetConfig};
    let node = args.node.clone().unwrap_or_else(|| default_node(args.addr));
    let mut config = match (&args.redis, args.redis_cluster.is_empty()) {
        (Some(url), _) => FleetConfig::new(url, &node),
        (None, false) => FleetConfig::cluster(args.redis_cluster.iter(), &node),
        (None, true) => return Ok(()),
    };
    config.sync_interval = args.sync_interval;
    config.ca_file = args.redis_ca_file.clone();
    // The crate logs the join, with the URLs' passwords as `***`, as in its errors.
    let fleet = Fleet::join(limiter, config)
        .await
        .map_err(|err| format!("--redis: {err}"))?;
    let _ = FLEET.set(fleet);
    Ok(())
}

/// A node name for this host and port: `web-1-3000`.
#[cfg(feature = "redis")]
fn default_node(addr: SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    let host = if host.is_empty() {
        "node".to_owned()
    } else {
        host
    };
    format!("{host}-{}", addr.port())
}

#[cfg(not(feature = "redis"))]
async fn join_fleet(args: &Args, _limiter: &Limiter) -> Result<(), String> {
    match (&args.redis, args.redis_cluster.is_empty()) {
        (None, true) => Ok(()),
        _ => Err(
            "--redis needs the `redis` feature: rebuild with --features redis, as in\n  \
                  cargo run --example server --features redis -- --redis redis://127.0.0.1:6379/"
                .to_owned(),
        ),
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
        // The admin API (`--admin`) gives the whole status; here, what a glance needs.
        let status = fleet.status();
        let failing: Vec<String> = status
            .errors
            .iter()
            .filter(|e| e.count > 0)
            .map(|e| {
                format!(
                    "{}: {} syncs, last: {}",
                    e.kind,
                    e.count,
                    e.last.as_deref().unwrap_or("")
                )
            })
            .collect();
        return json!({
            "node": status.node,
            "connected": status.connected,
            "syncs": status.syncs,
            "failures": failing,
            "bans_published": status.bans_published,
            "bans_applied": status.bans_applied,
            "duplicate_name": status.duplicate_name,
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
    // The flags first: a bad one is refused on stderr before anything is logged on stdout.
    let args = <Args as clap::Parser>::parse();
    // `info`, not the crate's `debug`, which logs every refusal: see the docs at the top.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
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
    if let Err(err) = join_fleet(&args, &limiter).await {
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
        Mode::Listener | Mode::MakeService => app.layer(args.request_layer(&limiter)),
    }
    .with_state(limiter.clone());

    let tcp = TcpListener::bind(args.addr).await?;
    tracing::info!(
        addr = %tcp.local_addr()?,
        mode = ?args.mode,
        metrics = args.metrics,
        "listening (HTTP/1.1 and h2c)"
    );
    tracing::info!(
        "limits in force: {}",
        limits_line(&limiter.config(), args.mode, args.header_timeout)
    );
    if let Some(name) = &args.key_header {
        let keys = &limiter.config().keys;
        tracing::info!(
            key_header = %name,
            tiers = keys.tiers.len(),
            max_requests_per_address = keys.max_requests_per_address,
            "requests keyed by the {name} header (fingerprints, key:…), by address without it: \
             --max-requests and --request-rate are each key's"
        );
    }
    if args.ratelimit_headers {
        tracing::info!(
            "responses carry RateLimit-Policy and RateLimit (they tell clients their limits)"
        );
    }
    let fair = limiter.config().fair_share;
    if fair.enabled {
        tracing::info!(
            watermark = fair.watermark,
            ceiling = fair.ceiling,
            request_ceiling = fair.request_ceiling,
            reclaim = fair.reclaim && args.mode == Mode::Listener,
            "fair share (from --config): the per-client caps are each client's guaranteed share \
             of max_conns_total and max_requests_total; the heaviest clients are refused first \
             under contention"
        );
    }
    if args.mode != Mode::Off {
        tokio::spawn(report_refusals(limiter.clone(), args.config.is_some()));
    }
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

/// The limits in force, for the start-up line, as `name=value` pairs named after the flags:
/// the counts, the rates and the ban, who is trusted, and the deadlines, which only the
/// listener applies. Limits only a config file sets are shown when set.
pub fn limits_line(config: &Config, mode: Mode, header_timeout: Duration) -> String {
    if mode == Mode::Off {
        return "none: --mode off serves with no limiter".to_owned();
    }
    let mut parts = vec![
        format!(
            "max-per-client={}",
            count_or_off(config.max_conns_per_client)
        ),
        format!("max-total={}", count_or_off(config.max_conns_total)),
        format!(
            "max-requests={}",
            count_or_off(config.max_requests_per_client)
        ),
        format!("request-rate={}", rate(config.request_rate.as_ref())),
        format!("ban={}", ban(config.ban.as_ref())),
    ];
    if let Some(connect) = &config.connect_rate {
        parts.push(format!("connect-rate={}", rate(Some(connect))));
    }
    for (name, n) in [
        ("path-rules", config.path_rules.len()),
        ("exempt", config.exempt.len()),
        ("overrides", config.overrides.len()),
    ] {
        if n > 0 {
            parts.push(format!("{name}={n}"));
        }
    }
    parts.push(format!(
        "trusted-proxies={}",
        networks(&config.trusted_proxies)
    ));
    parts.push(match config.client_ip.header {
        ClientIpHeader::None => "client-ip-header=off".to_owned(),
        header => format!(
            "client-ip-header={header} trusted-hops={}",
            config.client_ip.trusted_hops
        ),
    });
    match mode {
        Mode::Listener => parts.extend(listener_limits(config, header_timeout)),
        Mode::MakeService | Mode::Off => {
            parts.push("deadlines=off (only --mode listener applies them)".to_owned());
        }
    }
    parts.join(" ")
}

/// The listener's part of [`limits_line`]: its deadlines, the PROXY protocol, and
/// `--header-timeout` (applied by `Serve`).
fn listener_limits(config: &Config, header_timeout: Duration) -> Vec<String> {
    let listener = &config.listener;
    let min_rate = listener.min_receive_rate.map_or("off".to_owned(), |rate| {
        format!("{}B/s", rate.bytes_per_sec)
    });
    let mut parts = vec![
        format!("handshake-timeout={}", off_or(listener.handshake_timeout)),
        format!("idle-timeout={}", off_or(listener.idle_timeout)),
        format!("min-rate={min_rate}"),
        format!("header-timeout={}", off_or(header_timeout)),
    ];
    if listener.proxy_protocol == ProxyProtocol::Required {
        parts.push("proxy-protocol=required".to_owned());
    }
    parts
}

/// A count as the flags take it, `off` for 0 (unlimited).
fn count_or_off(n: usize) -> String {
    if n == 0 {
        "off".to_owned()
    } else {
        n.to_string()
    }
}

/// A duration as the flags take it (`500ms`, `1m`), `off` for zero.
fn off_or(duration: Duration) -> String {
    if duration.is_zero() {
        "off".to_owned()
    } else {
        human(duration)
    }
}

/// A duration as the flags take it: `500ms`, `1m`, `1h30m` (without humantime's spaces, which
/// would split a `name=value` pair).
fn human(duration: Duration) -> String {
    humantime::format_duration(duration)
        .to_string()
        .replace(' ', "")
}

/// A rate as `--request-rate` takes it (`5/500ms`), `off` for none.
fn rate(rate: Option<&RateLimit>) -> String {
    match rate {
        None => "off".to_owned(),
        Some(rate) => {
            let dry_run = if rate.dry_run { "(dry-run)" } else { "" };
            format!("{}/{}{dry_run}", rate.events, human(rate.period))
        }
    }
}

/// A ban policy as `--ban` takes it (`5/1m/10m`), `off` for none.
fn ban(ban: Option<&BanPolicy>) -> String {
    match ban {
        None => "off".to_owned(),
        Some(ban) => {
            let dry_run = if ban.dry_run { "(dry-run)" } else { "" };
            format!(
                "{}/{}/{}{dry_run}",
                ban.max_violations,
                human(ban.within),
                human(ban.ban_for)
            )
        }
    }
}

/// Networks separated by commas, the first few of a long list, `none` for none.
fn networks(networks: &[Cidr]) -> String {
    const SHOWN: usize = 4;
    if networks.is_empty() {
        return "none".to_owned();
    }
    let shown: Vec<String> = networks.iter().take(SHOWN).map(Cidr::to_string).collect();
    let shown = shown.join(",");
    if networks.len() > SHOWN {
        format!("{shown}(+{} more)", networks.len() - SHOWN)
    } else {
        shown
    }
}

/// How often the refusal report compares the counts.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// What governs each refusal or early close, for the report: the flag, if one does, and the
/// config file's field.
const GOVERNED_BY: [(&str, Option<&str>, &str); 12] = [
    (
        "client_connections",
        Some("--max-per-client"),
        "max_conns_per_client",
    ),
    ("total_connections", Some("--max-total"), "max_conns_total"),
    (
        "client_requests",
        Some("--max-requests"),
        "max_requests_per_client",
    ),
    ("request_rate", Some("--request-rate"), "request_rate"),
    ("banned", Some("--ban"), "ban"),
    ("connect_rate", None, "connect_rate"),
    ("path_rule", None, "path_rules"),
    ("tracked_clients_full", None, "max_tracked_clients"),
    (
        "proxy_untrusted",
        Some("--trusted-proxy"),
        "trusted_proxies",
    ),
    (
        "handshake_timeout",
        Some("--handshake-timeout"),
        "listener.handshake_timeout",
    ),
    (
        "idle_timeout",
        Some("--idle-timeout"),
        "listener.idle_timeout",
    ),
    (
        "min_receive_rate",
        Some("--min-rate"),
        "listener.min_receive_rate",
    ),
];

/// The refusals and early closes counted so far, by reason: what the report compares.
#[derive(Debug)]
pub struct Refusals {
    rejected: ByReason,
    closed: ByReason,
}

impl Refusals {
    /// The counts of `limiter` now.
    pub fn of(limiter: &Limiter) -> Self {
        let stats = limiter.stats();
        Refusals {
            rejected: stats.rejected,
            closed: stats.closed,
        }
    }
}

/// One line for each reason whose count grew from `before` to `now`: the reason, how many, and
/// what governs it (the flag, or with `from_file` the config file's field).
pub fn refusal_report(before: &Refusals, now: &Refusals, from_file: bool) -> Vec<String> {
    let hint = |reason: &str| {
        let governed = GOVERNED_BY.iter().find(|(name, _, _)| *name == reason);
        match governed {
            Some((_, _, field)) if from_file => format!("; see {field} in the config file"),
            Some((_, Some(flag), _)) => format!("; see {flag}"),
            _ => String::new(),
        }
    };
    let secs = REPORT_EVERY.as_secs();
    let refused = grown(&before.rejected, &now.rejected)
        .map(|(reason, n)| format!("{reason}: {n} refused in the last {secs}s{}", hint(reason)));
    let closed = grown(&before.closed, &now.closed).map(|(reason, n)| {
        let connections = if n == 1 { "connection" } else { "connections" };
        format!(
            "{reason}: {n} {connections} closed early in the last {secs}s{}",
            hint(reason)
        )
    });
    refused.chain(closed).collect()
}

/// The reasons counted more in `now` than in `before`, with how many more.
fn grown<'a>(
    before: &'a ByReason,
    now: &'a ByReason,
) -> impl Iterator<Item = (&'static str, u64)> + 'a {
    now.iter().filter_map(|(reason, count)| {
        let more = count.saturating_sub(before.get(reason).unwrap_or(0));
        (more > 0).then_some((reason, more))
    })
}

/// Every [`REPORT_EVERY`], logs at `info` one line for each reason clients were refused (or
/// closed early) for since the last look: at the default log level, the one hint that a limit
/// is being hit, and which flag sets it.
async fn report_refusals(limiter: Limiter, from_file: bool) {
    let start = tokio::time::Instant::now() + REPORT_EVERY;
    let mut ticks = tokio::time::interval_at(start, REPORT_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut before = Refusals::of(&limiter);
    // Until the runtime stops, with the server.
    loop {
        ticks.tick().await;
        let now = Refusals::of(&limiter);
        for line in refusal_report(&before, &now, from_file) {
            tracing::info!("{line}");
        }
        before = now;
    }
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
            (figures.name.to_owned(), value)
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
        "unidentified_requests": stats.unidentified_requests,
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
