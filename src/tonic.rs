//! tonic integration: connections from `serve_with_incoming`, and the client of a request from
//! tonic's connect info.
//!
//! tonic has no make-service hook, so it has two admission points, and both can share one
//! [`Limiter`](crate::Limiter):
//!
//! - **Connections**: wrap the incoming stream (`TcpIncoming`, or any stream of IO) in a
//!   [`ConnLimitListener::from_stream`](crate::ConnLimitListener::from_stream) and serve it
//!   with `serve_with_incoming`. A
//!   connection over a limit is closed before tonic reads a byte of it (no TLS handshake, no
//!   HTTP/2 preface). Admitted connections come out as [`TrackedIo`], which implements tonic's
//!   [`Connected`] with the connect info of the IO inside, so `Request::remote_addr()` keeps
//!   working.
//! - **Requests**: `Server::builder().layer(ConnLimitLayer::new(cfg))`. Each call is admitted
//!   against `max_requests_per_client`, the request rates and the path rules (a gRPC method's
//!   path is `/package.Service/Method`), with the client read from tonic's `TcpConnectInfo`. A
//!   refused call gets a trailers-only gRPC status, never an HTTP error: `RESOURCE_EXHAUSTED`
//!   for the client's own limits, `UNAVAILABLE` when the server as a whole is full, with a
//!   generic `grpc-message`. A call stays counted until its response stream has ended, so a
//!   streaming call counts for as long as it streams, and a cancelled call is released when
//!   tonic drops it.
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use tonic::transport::{server::TcpIncoming, Server};
//! use tower_connlimit::{Config, ConnLimitLayer, ConnLimitListener, Limiter};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let limiter = Limiter::new(Config {
//!     max_conns_per_client: 8,
//!     max_requests_per_client: 32,
//!     ..Config::default()
//! });
//! let (_reporter, health) = tonic_health::server::health_reporter();
//! let addr: SocketAddr = "127.0.0.1:50051".parse()?;
//! // `serve_with_incoming` ignores the builder's TCP settings: set them on the incoming stream.
//! let incoming = TcpIncoming::bind(addr)?.with_nodelay(Some(true));
//! Server::builder()
//!     .layer(ConnLimitLayer::with_limiter(limiter.clone()))
//!     .add_service(health)
//!     .serve_with_incoming(ConnLimitListener::from_stream(incoming, limiter))
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Refusing connections
//!
//! Refuse with [`RejectAction::Reset`](crate::listener::RejectAction::Reset) or
//! [`Close`](crate::listener::RejectAction::Close) (the default): gRPC clients speak HTTP/2 and
//! cannot read [`HttpResponse`](crate::listener::RejectAction::HttpResponse)'s HTTP/1.1 answer.
//! A client whose connection is refused sees its call fail as over any connection that breaks (a
//! tonic 0.14 client reports `UNAVAILABLE` after a reset, which standard retry policies retry,
//! and `CANCELLED` after a close, which they do not), and its channel connects again on the next
//! call; so prefer `Reset`. The guide's table of [what gRPC clients
//! see](crate::guide::the_gate#grpc-clients) has every case.
//!
//! # TLS
//!
//! TLS goes on top of the listener, so a refused peer never gets a handshake:
//!
//! - **tonic's own TLS** (`Server::builder().tls_config(..)`) runs the handshake on the
//!   connections the listener yields. tonic gives each call both `TcpConnectInfo` and
//!   `TlsConnectInfo<TcpConnectInfo>`, and the `tonic` feature reads the first.
//! - **TLS terminated in the incoming stream** (tokio-rustls' `TlsStream` over the admitted
//!   connections, say) gives each call only `TlsConnectInfo<TcpConnectInfo>`: enable the
//!   `tonic-tls` feature (`tonic-tls-ring` with the ring provider) so the layer reads it. Without it, every call is refused with
//!   `INTERNAL` and the fix is logged.

use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::listener::TrackedIo;

/// tonic's connect info for an admitted connection: the inner IO's, with the remote address
/// the limiter admitted, which with [`ProxyProtocol::Required`](crate::listener::ProxyProtocol::Required)
/// is the client the PROXY header named, not the proxy. So `Request::remote_addr()` names the
/// same client that was counted.
impl<IO> Connected for TrackedIo<IO>
where
    IO: Connected<ConnectInfo = TcpConnectInfo>,
{
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo {
            remote_addr: Some(self.remote_addr()),
            ..self.get_ref().connect_info()
        }
    }
}

/// The peer address in tonic's connect info, if the request has any.
pub(crate) fn peer_of(extensions: &http::Extensions) -> Option<std::net::SocketAddr> {
    let tcp = extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr);
    #[cfg(any(feature = "tonic-tls", feature = "tonic-tls-ring"))]
    let tcp = tcp.or_else(|| {
        extensions
            .get::<tonic::transport::server::TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|info| info.get_ref().remote_addr())
    });
    tcp
}
