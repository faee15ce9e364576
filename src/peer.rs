//! Who a connection's client is: [`PeerAddr`], and the refusal when there is no address to
//! count a client under.

use std::net::SocketAddr;

use crate::limiter::{Checkpoint, Kind};
use crate::reason::{grpc, ReasonInfo};

/// Anything that knows the peer address of a connection: an accept-loop address, an accepted
/// IO, axum's `IncomingStream`.
///
/// The listener's stream form reads each connection's client through this trait; implement it
/// for a custom IO type to use that type there. Returning `None` means "no IP peer" (a Unix
/// socket, say): such a connection cannot be keyed, so it is refused and the misconfiguration is
/// logged.
pub trait PeerAddr {
    /// The remote socket address, if the connection has one.
    fn peer_addr(&self) -> Option<SocketAddr>;
}

impl PeerAddr for SocketAddr {
    #[inline]
    fn peer_addr(&self) -> Option<SocketAddr> {
        Some(*self)
    }
}

impl<T: PeerAddr + ?Sized> PeerAddr for &T {
    #[inline]
    fn peer_addr(&self) -> Option<SocketAddr> {
        (**self).peer_addr()
    }
}

impl PeerAddr for Option<SocketAddr> {
    #[inline]
    fn peer_addr(&self) -> Option<SocketAddr> {
        *self
    }
}

/// A Unix socket's peer is a process on this host, with no IP address of its own: it is counted
/// as `127.0.0.1`, like a proxy on loopback. All of a socket's peers then share one client's
/// allowance, unless `127.0.0.1` is one of the config's `trusted_proxies`: a local proxy's
/// PROXY header (at the listener) or client address header (at the request level) then names
/// each client, as it would over TCP.
#[cfg(unix)]
impl PeerAddr for tokio::net::unix::SocketAddr {
    #[inline]
    fn peer_addr(&self) -> Option<SocketAddr> {
        Some(SocketAddr::from(([127, 0, 0, 1], 0)))
    }
}

impl PeerAddr for tokio::net::TcpStream {
    #[inline]
    fn peer_addr(&self) -> Option<SocketAddr> {
        tokio::net::TcpStream::peer_addr(self).ok()
    }
}

#[cfg(feature = "axum")]
impl<L> PeerAddr for axum::serve::IncomingStream<'_, L>
where
    L: axum::serve::Listener,
    L::Addr: PeerAddr,
{
    #[inline]
    fn peer_addr(&self) -> Option<SocketAddr> {
        self.remote_addr().peer_addr()
    }
}

/// A connection or request refused because no client address could be found: a server
/// misconfiguration, answered `500` (`INTERNAL` for a gRPC call) and logged.
pub(crate) static NO_CLIENT_ADDRESS: ReasonInfo = ReasonInfo::new(
    "no_client_address",
    "internal server error",
    500,
    grpc::INTERNAL,
);

/// Refuses a connection or request (`kind`) at `checkpoint` for want of a client address,
/// counts it, and logs `fix`: at error level the first time at this admission point, at debug
/// after that, so the log names the misconfiguration without flooding.
pub(crate) fn refuse_without_address(checkpoint: &Checkpoint, kind: Kind, fix: &str) {
    let first = checkpoint.refuse(kind, &NO_CLIENT_ADDRESS, None);
    let (what, point) = (kind.as_str(), checkpoint.point().name());
    if first {
        tracing::error!(what, %point, "{fix}");
    } else {
        tracing::debug!(what, %point, "{fix}");
    }
}
