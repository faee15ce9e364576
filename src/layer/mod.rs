//! Admission in the tower stack: [`ConnLimitLayer`], which counts connections around a
//! make-service and in-flight requests on a router.
//!
//! One layer type, `ConnLimitLayer::new(cfg)`, serves both levels; which one depends on what it
//! wraps, and each level is its own `Service` impl on [`ConnLimit`], in its own module:
//!
//! - around a **make-service**, whose target is a [`MakeTarget`] (`make_service.rs`), it counts
//!   *connections* under the admission point `make_service`;
//! - around a **request service** (`Service<http::Request<B>>`, an axum `Router`;
//!   `request.rs`), it counts *in-flight requests* under the admission point `request_layer`.
//!
//! The two can never be confused: [`MakeTarget`] is a sealed trait that `http::Request` does not
//! implement. The guide's [which admission point](crate::guide::admission_points) compares
//! the two with the listener and sets each one up.
//!
//! # Connection level
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use axum::{routing::get, Router};
//! use tower_connlimit::{Config, ConnLimitLayer};
//! use tower_layer::Layer;
//!
//! # async fn run() -> std::io::Result<()> {
//! let app = Router::new().route("/", get(|| async { "hello" }));
//! let make_service = ConnLimitLayer::new(Config { max_conns_per_client: 10, ..Config::default() })
//!     .layer(app.into_make_service_with_connect_info::<SocketAddr>());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, make_service).await
//! # }
//! ```
//!
//! Every new connection is admitted against `max_conns_per_client`, `max_conns_total`, the
//! overrides and `connect_rate`. The per-connection service ([`LimitedConnection`]) holds the
//! permit until the server drops it at the end of the connection, and puts a [`ClientAddr`] in
//! every request. A refused connection is still served, since servers like `axum::serve`
//! require a make-service that never fails, but by a service that answers every request with
//! the refusal and `Connection: close`, without calling yours.
//!
//! This level runs after the TCP accept and, with TLS, after the handshake, and it has limits
//! that the [listener](crate::listener) does not:
//!
//! - **A refused connection stays open until it sends a request.** Only then can it be answered
//!   and closed. `axum::serve` sets no header-read timeout at all, so an over-limit client can
//!   hold idle connections there. With hyper-util, serve HTTP/1 with a timer (`http1_only()`,
//!   `http1().timer(TokioTimer::new())`) so that hyper's header-read timeout runs from the start
//!   of every connection, as `examples/hyper.rs` does. Where idle connections are the threat
//!   (go-connlimit's CVEs), use the listener.
//! - **HTTP/2 cannot be closed from here.** hyper strips `Connection` from HTTP/2 responses, so
//!   a refused h2 connection stays open (uncounted), answering each stream with the refusal.
//! - **Upgrades are not counted.** On an HTTP/1 upgrade (WebSocket) hyper drops the
//!   per-connection service, and with it the permit, while the upgraded stream lives on. The
//!   listener's [`TrackedIo`](crate::TrackedIo) keeps upgraded connections counted.
//!
//! Use this level *or* the listener on one [`Limiter`](crate::Limiter), not both: each counts every connection,
//! so together they would count it twice.
//!
//! # Request level
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use axum::{routing::get, Router};
//! use tower_connlimit::{Config, ConnLimitLayer};
//!
//! # async fn run() -> std::io::Result<()> {
//! let app = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(ConnLimitLayer::new(Config { max_requests_per_client: 4, ..Config::default() }));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
//! # }
//! ```
//!
//! Each request is admitted against a ban, `request_rate`, the path rules and
//! `max_requests_per_client`. The permit lives until the response body has ended, so a
//! streaming response counts for as long as it streams; an upgraded request (a WebSocket's
//! `101 Switching Protocols`) stops counting when its response is sent. A refused request gets
//! `429 Too Many Requests` (`503 Service Unavailable` when the server as a whole is full), with
//! `Retry-After` when the refusal knows when to come back (rates and bans); the connection
//! stays open.
//!
//! The client is found in the request's extensions, in this order: axum's
//! `ConnectInfo<SocketAddr>`, a [`ClientAddr`] (inserted by the connection level, or by you),
//! a plain `SocketAddr`, and with the `tonic` feature tonic's `TcpConnectInfo` (or, with
//! `tonic-tls`, `TlsConnectInfo<TcpConnectInfo>`). When that peer is one of the config's
//! `trusted_proxies` and [`ClientIpConfig::header`](crate::client_ip::ClientIpConfig::header) is set, the
//! client is the address the header names ([`ClientIpHeader`](crate::client_ip::ClientIpHeader)). A request
//! with no address at all is a server misconfiguration: it is answered with
//! `500 Internal Server Error`, counted as a `no_client_address` refusal, and logged at error
//! level (once; later ones at debug) with the fix. It never passes unlimited.
//!
//! # gRPC calls
//!
//! A gRPC call (a `POST` with content type `application/grpc`, `application/grpc+proto`, ...,
//! or gRPC-Web's `application/grpc-web...`) is never refused with an HTTP error, which gRPC
//! clients would report as a transport failure. At either level it gets a trailers-only gRPC
//! response instead: `200 OK`, no body, the request's kind of content type, and `grpc-status`
//! `RESOURCE_EXHAUSTED` (8) for the client's own limits, `UNAVAILABLE` (14) when the server as a
//! whole is full, or `INTERNAL` (13) for a missing client address, with the same generic text
//! as `grpc-message`, and `grpc-retry-pushback-ms` where an HTTP refusal would have
//! `Retry-After`. Any other request gets the HTTP answer, whatever its content type. With
//! tonic, put the layer in `Server::builder().layer(..)`; see the `tonic` module (feature
//! `tonic`). With gRPC-Web from browsers, put it inside the CORS layer, so that the browser may
//! read `grpc-status`.
//!
//! # Sharing one limiter
//!
//! [`ConnLimitLayer::with_limiter`] builds a layer on an existing [`Limiter`](crate::Limiter), so connections
//! counted at the listener or the connection level and requests counted on the router share one
//! per-client state and one live config.

mod body;
mod client;
mod conn_limit_layer;
mod connection;
pub mod future;
mod key_source;
mod make_service;
mod ratelimit_headers;
mod refusal;
mod request;

pub use self::body::ResponseBody;
pub use self::client::{ClientAddr, ClientIp};
pub use self::conn_limit_layer::{ConnLimit, ConnLimitLayer};
pub use self::connection::LimitedConnection;
pub use self::key_source::KeySource;
pub use self::make_service::MakeTarget;

use crate::limiter::AdmissionPoint;
use crate::peer::NO_CLIENT_ADDRESS;
use crate::reason::ReasonInfo;

/// The connection level's admission point.
static MAKE_SERVICE: AdmissionPoint =
    AdmissionPoint::connections("make_service").refusing(&REFUSALS);

/// The request level's admission point.
static REQUEST_LAYER: AdmissionPoint =
    AdmissionPoint::requests("request_layer").refusing(&REQUEST_REFUSALS);

/// What either level refuses before the limiter can decide.
static REFUSALS: [&ReasonInfo; 1] = [&NO_CLIENT_ADDRESS];

/// What the request level refuses before the limiter can decide: besides a missing address, a
/// trusted proxy's request that names no usable client, with
/// [`Unidentified::Refuse`](crate::client_ip::Unidentified::Refuse).
static REQUEST_REFUSALS: [&ReasonInfo; 2] = [&NO_CLIENT_ADDRESS, &CLIENT_UNIDENTIFIED];

/// A trusted proxy's request that names no usable client, refused as
/// [`Unidentified::Refuse`](crate::client_ip::Unidentified::Refuse) asks.
static CLIENT_UNIDENTIFIED: ReasonInfo = ReasonInfo::new(
    "client_unidentified",
    "bad request",
    400,
    crate::reason::grpc::INVALID_ARGUMENT,
);
