//! Per-client connection and request limits for tokio, tower, axum and hyper servers.
//!
//! `tower-connlimit` stops one client from exhausting a server's connections, file descriptors
//! and tasks. It counts the live connections (and, optionally, in-flight requests) of each client
//! IP — the job of [hashicorp/go-connlimit], which Nomad and Consul adopted after
//! CVE-2020-7218/7219 — and refuses the ones over the limit as early and as cheaply as the server
//! allows.
//!
//! [hashicorp/go-connlimit]: https://github.com/hashicorp/go-connlimit
//!
//! # One core, three admission points
//!
//! A [`Limiter`] holds the per-client counts (a sharded map keyed by [`ClientKey`]) and the live
//! [`Config`]. It is a cheap handle; every admission point below can share one, so that a server
//! can refuse connections at accept and limit requests on its router against the same state.
//!
//! | admission point | counts | refuses with | use it when |
//! |---|---|---|---|
//! | [`ConnLimitListener`] (accept) | connections, for as long as the IO lives (upgrades included) | close, reset, or a canned HTTP 429/503 | always, if you own the listener: cheapest, before TLS or any byte read, works for HTTP/1, HTTP/2, WebSocket, raw TCP |
//! | [`ConnLimitLayer`] around a make-service | connections, for as long as the per-connection service lives | 429/503 + `Connection: close` | you cannot wrap the listener; HTTP/1 only (h2 cannot be closed, upgrades are not counted) |
//! | [`ConnLimitLayer`] on a router | in-flight requests, until the response body ends | 429 | limiting concurrent work per client, HTTP/2 streams included |
//!
//! # Quick start
//!
//! Refuse a client's eleventh concurrent connection at accept, with axum:
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use axum::{routing::get, Router};
//! use tower_connlimit::{Config, ConnLimitListener, Limiter};
//!
//! # async fn run() -> std::io::Result<()> {
//! let limiter = Limiter::new(Config { max_conns_per_client: 10, ..Config::default() });
//! let app = Router::new().route("/", get(|| async { "hello" }));
//! let tcp = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(
//!     ConnLimitListener::new(tcp, limiter.clone()).for_axum(),
//!     app.into_make_service_with_connect_info::<SocketAddr>(),
//! )
//! .await
//! # }
//! ```
//!
//! Or use the core directly, as go-connlimit's `Accept` and `free`:
//!
//! ```
//! use tower_connlimit::{Config, Limiter};
//!
//! let limiter = Limiter::new(Config { max_conns_per_client: 1, ..Config::default() });
//! let ip = "192.0.2.1".parse().unwrap();
//! let permit = limiter.try_acquire(ip).expect("first connection is admitted");
//! assert!(limiter.try_acquire(ip).is_err());
//! drop(permit); // free
//! assert!(limiter.try_acquire(ip).is_ok());
//! ```
//!
//! See the [`listener`] and [`layer`] modules for each admission point in depth.
//!
//! # The layered gate
//!
//! The same decision also checks, for one map lookup: a temporary ban ([`BanPolicy`],
//! [`Limiter::ban`]), the connect rate ([`Config::connect_rate`]) at every connection admission
//! point, and at the request layer the request rate and per-path rules ([`PathRule`]). Rates use
//! one of four [`Strategy`]s (see [`rate`]); a rate refusal carries
//! [`Rejected::retry_after`] and is answered with `429` and `Retry-After`. Any rule can run in
//! dry-run mode. Clients that have left are remembered only while their rate or ban state
//! matters, and at most [`Config::max_tracked_clients`] at once ([`WhenFull`]). Time comes from
//! a [`Clock`]; a [`FakeClock`] makes every time-driven behaviour testable without sleeping.
//! [`Limiter::allow_connect`] and [`Limiter::allow_request`] return a [`Decision`] for custom
//! servers, as a connection security gate's `allowConnect` / `allowRequest` do.
//!
//! # Slow clients and proxies
//!
//! Connections admitted by a [`ConnLimitListener`] carry deadlines from the config: a first-byte
//! [`Config::handshake_timeout`], an [`Config::idle_timeout`], and a [`MinReceiveRate`] in the
//! style of Apache `mod_reqtimeout`; [`Stats::timeouts`] counts what they close. Behind a load
//! balancer, [`ProxyProtocol::Required`] reads the PROXY header (v1 or v2) of
//! [`Config::trusted_proxies`] and keys each connection by the real client. Behind an HTTP proxy,
//! [`Config::client_ip_header`] lets the request layer read `Forwarded`, `X-Forwarded-For` or
//! `X-Real-IP` from trusted proxies only, walked from the right ([`ClientIpHeader`]).
//!
//! # Seeing who is limited, and why
//!
//! [`Limiter::stats`] is a snapshot of counters: open connections and in-flight requests,
//! admissions, refusals by reason ([`RejectedStats`]), deadline closes, bans, evictions, and the
//! same per [`AdmissionPoint`] ([`PointStats`]). [`Limiter::top_clients`] ranks the clients
//! holding the most connections, and [`Limiter::client`] details one ([`ClientStats`]).
//! Admissions are logged through `tracing` at trace and refusals at debug, each with the client
//! key, the admission point and the reason; at warn, the first refusal after a quiet spell and
//! then one summary per 10 seconds ("N more connections or requests refused from about M
//! clients"), so a flood cannot flood the log. With the `metrics` feature, `Limiter::record_metrics`
//! exports the stats through the `metrics` facade, labelled by point and reason, never by
//! client.
//!
//! # Semantics
//!
//! - **Client key.** The IP address, normalised (an IPv4-mapped IPv6 address is its IPv4
//!   address; the port and IPv6 zone never count) and masked to [`Config::ipv4_prefix`] (32) or
//!   [`Config::ipv6_prefix`] (64) bits. go-connlimit keys by exact address; set `ipv6_prefix = 128`
//!   for the same.
//! - **0 means unlimited**, for every limit.
//! - **Permits are RAII.** Dropping a [`ConnPermit`] or [`RequestPermit`] releases it exactly
//!   once, also on panic and when the future holding it is cancelled. A client's map entry is
//!   removed as soon as nothing about it needs remembering: at its last permit, or, with rate
//!   rules or bans, once that record has expired.
//! - **Live config.** [`Limiter::set_config`] swaps the config atomically; the next decision uses
//!   it. Lowering a limit never closes open connections. An invalid config is refused with a
//!   [`ConfigError`] naming the field, and the old config stays.
//! - **Errors do not leak.** What a client sees ("client connection limit reached") names no limit
//!   and no count; [`Rejected::reason`] and [`Limiter::stats`] tell the operator why.
//! - **Exemptions and overrides.** [`Config::exempt`] networks are counted but never refused;
//!   [`Config::overrides`] set a different per-client limit for a network, longest prefix winning.
//!
//! # Features
//!
//! - `axum` (default): axum's `Listener` for [`ConnLimitListener`], `ConnectInfo` support, and the
//!   make-service level for axum's `IncomingStream`.
//! - `serde`: loading a [`Config`] from TOML or JSON (`Config::from_toml_str`,
//!   `Config::from_json_str`), with human-readable durations and errors that name the field.
//! - `tonic`: tonic's `Connected` for [`TrackedIo`], so `Request::remote_addr()` works behind a
//!   [`ConnLimitListener`] serving `serve_with_incoming`, and the request level reading the
//!   client from tonic's `TcpConnectInfo`; see the `tonic` module. Needs Rust 1.88 with current
//!   tonic 0.14 releases. (Refused gRPC calls get a trailers-only gRPC status, and the listener
//!   is a `Stream` around any incoming stream, with or without this feature.)
//! - `tonic-tls`: `tonic`, and the request level also reading `TlsConnectInfo<TcpConnectInfo>`,
//!   for TLS terminated in the incoming stream (tonic's own `tls_config` needs only `tonic`). It
//!   picks no crypto provider.
//! - `metrics`: [`Limiter::record_metrics`] writes the stats through the `metrics` facade,
//!   labelled by admission point and reason; see the `metrics` module.
//! - `full`: `axum`, `serde`, `tonic` and `metrics`.
//!
//! # go-connlimit mapping
//!
//! | go-connlimit | tower-connlimit |
//! |---|---|
//! | `NewLimiter(Config{MaxConnsPerClientIP: 10})` | `Limiter::new(Config { max_conns_per_client: 10, ..Config::default() })` |
//! | `Accept(conn) (free, err)` | [`Limiter::try_acquire`] → [`ConnPermit`]; drop it to free |
//! | `NumOpen(addr)` | [`Limiter::open_connections`] |
//! | `Config()` / `SetConfig(c)` | [`Limiter::config`] / [`Limiter::set_config`] |
//! | `ErrPerClientIPLimitReached` | [`Rejected`] with [`RejectReason::ClientConnections`] |
//! | `HTTPConnStateFunc` | [`ConnLimitLayer`] on a make-service, or [`ConnLimitListener`] |
//! | `Wrap(conn, free)` | [`TrackedIo`] |

#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod addr;
mod cidr;
mod clock;
mod config;
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
mod config_file;
mod forwarded;
mod key;
pub mod layer;
mod limiter;
pub mod listener;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
pub mod rate;
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub mod tonic;

pub use addr::{ClientAddr, PeerAddr};
pub use cidr::{Cidr, CidrError};
pub use clock::{Clock, FakeClock, TokioClock};
pub use config::{BanPolicy, CidrLimit, Config, ConfigError, PathMatch, PathRule, WhenFull};
pub use forwarded::{ClientIpHeader, UnknownClientIpHeader};
pub use key::ClientKey;
pub use layer::{ConnLimit, ConnLimitLayer, LimitedConnection, ResponseBody};
pub use limiter::{
    AdmissionPoint, ClientStats, ConnPermit, Decision, Limiter, PointStats, RejectReason, Rejected,
    RejectedStats, RequestPermit, Stats, TimeoutStats,
};
#[cfg(feature = "axum")]
pub use listener::AxumListener;
pub use listener::{
    ConnLimitListener, MinReceiveRate, ProxyProtocol, RejectAction, RejectableIo, TrackedIo,
};
pub use rate::{RateLimit, Strategy};

/// Entry points for the fuzz targets in `fuzz/`, built only by `cargo fuzz` (`--cfg fuzzing`).
/// Not part of the API.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod __fuzz {
    use std::net::SocketAddr;

    use crate::listener::proxy_protocol;

    /// Parses one complete PROXY header (v1 or v2): the source address it names, if any, or
    /// `Err(())` for a header the listener refuses.
    #[allow(clippy::result_unit_err)]
    pub fn parse_proxy_header(bytes: &[u8]) -> Result<Option<SocketAddr>, ()> {
        proxy_protocol::parse_header(bytes).map_err(|_| ())
    }

    /// Reads one PROXY header from the start of `io`, as the listener does: never a byte past
    /// the header's end.
    #[allow(clippy::result_unit_err)]
    pub async fn read_proxy_header<IO>(io: &mut IO) -> Result<Option<SocketAddr>, ()>
    where
        IO: tokio::io::AsyncRead + Unpin,
    {
        proxy_protocol::read_header(io).await.map_err(|_| ())
    }

    /// The client address the request layer reads from `headers` with `header`, `hops` trusted
    /// proxies in front of the server.
    pub fn client_from_headers(
        headers: &http::HeaderMap,
        header: crate::ClientIpHeader,
        hops: usize,
    ) -> Option<std::net::IpAddr> {
        crate::forwarded::client_from_headers(headers, header, hops)
    }
}

/// The README's examples, compiled (and the runnable ones run) as doctests.
#[cfg(all(doctest, feature = "axum"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
