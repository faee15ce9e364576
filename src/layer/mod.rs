//! Admission in the tower stack: [`ConnLimitLayer`] at the make-service and request levels.
//!
//! One layer type serves two levels; which one depends on what it wraps.
//!
//! # Make-service level: count connections
//!
//! Wrap a make-service — `Router::into_make_service_with_connect_info::<SocketAddr>()`, or any
//! `Service` whose target implements [`PeerAddr`](crate::PeerAddr) (such as the `SocketAddr` a
//! hand-written hyper-util loop passes) — and every new connection is admitted against
//! `max_conns_per_client`, `max_conns_total` and the overrides. The per-connection service
//! ([`LimitedConnection`]) holds the permit until the server drops it at the end of the
//! connection.
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
//! A refused connection is still served — servers like `axum::serve` require a make-service that
//! never fails — but by a service that answers every request with `429 Too Many Requests`
//! (per-client limit) or `503 Service Unavailable` (global cap), a generic body, and
//! `Connection: close`, without calling your service.
//!
//! This level runs after the TCP accept and, with TLS, after the handshake, and it has limits
//! that the [listener](crate::listener) does not:
//!
//! - **A refused connection stays open until it sends a request.** Only then can it be answered
//!   and closed. A client over its limit can therefore still hold idle connections, and file
//!   descriptors, for as long as the server lets an idle connection live: `axum::serve` sets no
//!   header-read timeout at all. With hyper-util, serve HTTP/1 with a timer
//!   (`http1_only()`, `http1().timer(TokioTimer::new())`) so that hyper's header-read timeout
//!   (30 s by default) runs from the start of every connection, as `examples/hyper.rs` does;
//!   `auto::Builder` serving both versions first waits, with no timeout, for the bytes that tell
//!   HTTP/1 from HTTP/2. Where idle connections are the threat (go-connlimit's CVEs), use the
//!   listener.
//! - **HTTP/2 cannot be closed from here.** hyper strips `Connection` from HTTP/2 responses, so a
//!   refused h2 connection stays open (uncounted), answering each stream with 429/503 until the
//!   client gives up. Use the listener to refuse h2 clients outright.
//! - **Upgrades are not counted.** On an HTTP/1 upgrade (WebSocket) hyper drops the per-connection
//!   service, and with it the permit, while the upgraded stream lives on. The listener's
//!   [`TrackedIo`](crate::TrackedIo) keeps upgraded connections counted until they close.
//!
//! Use this level *or* the listener on one [`Limiter`](crate::Limiter), not both: each counts
//! every connection, so together they would count it twice.
//!
//! # Request level: count in-flight requests
//!
//! `.layer(..)` on an axum `Router` (or any `Service<http::Request<B>>`) admits each request
//! against `max_requests_per_client`. The permit lives until the response body has ended, so a
//! streaming response counts for as long as it streams.
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
//! A refused request gets `429 Too Many Requests` (`503 Service Unavailable` when the server as
//! a whole is full); the connection stays open. An upgraded
//! request (a WebSocket's `101 Switching Protocols`) stops counting when its response is sent:
//! the upgraded stream is a connection, counted by the listener, not a request in flight. The client is
//! found in the request's extensions, in this order: axum's `ConnectInfo<SocketAddr>`, a
//! [`ClientAddr`](crate::ClientAddr) (inserted by the make-service level, or by you), a plain
//! `SocketAddr`, and with the `tonic` feature tonic's `TcpConnectInfo` (or, with `tonic-tls`,
//! `TlsConnectInfo<TcpConnectInfo>`). A request with none of these is a server
//! misconfiguration: it is answered with `500 Internal Server Error` (a gRPC call with
//! `INTERNAL`), counted in [`RejectedStats::no_client_address`], and logged at error level
//! (once; later ones at debug) with the fix. It never passes unlimited.
//!
//! [`RejectedStats::no_client_address`]: crate::RejectedStats::no_client_address
//!
//! # gRPC calls
//!
//! A gRPC call (a `POST` with content type `application/grpc`, `application/grpc+proto`, ...,
//! or gRPC-Web's `application/grpc-web...`) is never refused with an HTTP error, which gRPC
//! clients would report as a transport failure. At either level it gets a trailers-only gRPC
//! response instead: `200 OK`, no body, the request's kind of content type, and in its headers
//! `grpc-status` `RESOURCE_EXHAUSTED` (8) for the client's own limits, `UNAVAILABLE` (14) for
//! the server's global cap or a full client table, or `INTERNAL` (13) for a missing client
//! address, with the same generic text as `grpc-message`, and `grpc-retry-pushback-ms` where an
//! HTTP refusal would have `Retry-After`. Any other request gets the HTTP answer, whatever its
//! content type. With tonic, put the layer in `Server::builder().layer(..)`; the `tonic` module
//! (feature `tonic`) explains how it finds the client there. With gRPC-Web from browsers, put
//! it inside the CORS layer, so that the browser may read `grpc-status`.
//!
//! # Sharing one limiter
//!
//! [`ConnLimitLayer::with_limiter`] builds a layer on an existing [`Limiter`](crate::Limiter), so
//! connections counted at the listener or the make-service and requests counted on the router
//! share one per-client state and one live config.

mod body;
mod conn_limit_layer;
mod connection;
pub mod future;
mod response;
mod service;

pub use self::body::ResponseBody;
pub use self::conn_limit_layer::ConnLimitLayer;
pub use self::connection::LimitedConnection;
pub use self::service::ConnLimit;
