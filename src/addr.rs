//! Where each admission point finds the client's address.

use std::net::{IpAddr, SocketAddr};

use http::Extensions;

/// Anything that knows the peer address of a connection: an accept-loop address, a make-service
/// target, an accepted IO.
///
/// The make-service layer reads the client from its target through this trait, and the listener
/// reads it from the address its inner listener returns. Implement it for your own target type to
/// use the make-service layer with it. Returning `None` means "no IP peer" (a Unix socket, say):
/// such a connection cannot be keyed, so it is refused and the misconfiguration is logged.
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

/// The client's socket address, as a request extension.
///
/// The make-service layer inserts it into every request of an admitted connection, so a
/// request-level [`ConnLimitLayer`](crate::ConnLimitLayer) further in finds the client even in a
/// hand-written hyper loop with no `ConnectInfo`. Insert it yourself in a custom server to tell
/// the request layer who the client is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub SocketAddr);

/// Counts a refusal at `point` for want of a client address and logs `fix`: at error level the
/// first time for this limiter, at debug after that, so the log names the misconfiguration
/// without flooding.
pub(crate) fn report_missing_address(
    limiter: &crate::Limiter,
    kind: crate::limiter::Kind,
    point: crate::AdmissionPoint,
    fix: &str,
) {
    let what = kind.as_str();
    if limiter.note_missing_client_address(kind, point) {
        tracing::error!(what, %point, "{fix}");
    } else {
        tracing::debug!(what, %point, "{fix}");
    }
}

/// The client address of a request, from the first of: axum's `ConnectInfo<SocketAddr>`, a
/// [`ClientAddr`] extension, a plain `SocketAddr` extension, tonic's connect info.
pub(crate) fn client_addr_of(extensions: &Extensions) -> Option<SocketAddr> {
    #[cfg(feature = "axum")]
    if let Some(info) = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(info.0);
    }
    if let Some(ClientAddr(addr)) = extensions.get::<ClientAddr>() {
        return Some(*addr);
    }
    if let Some(addr) = extensions.get::<SocketAddr>() {
        return Some(*addr);
    }
    #[cfg(feature = "tonic")]
    if let Some(addr) = crate::tonic::client_addr_of(extensions) {
        return Some(addr);
    }
    None
}

/// The client a request comes from: `peer`, or, when `peer` is a trusted proxy and
/// `client_ip_header` is set, the address the header names (see
/// [`ClientIpHeader`](crate::ClientIpHeader)). A trusted proxy's request whose header names no
/// usable address is counted as the proxy's own.
pub(crate) fn request_client_ip(
    limiter: &crate::Limiter,
    peer: IpAddr,
    headers: &http::HeaderMap,
) -> IpAddr {
    let compiled = limiter.compiled();
    let config = &compiled.config;
    if config.client_ip_header == crate::ClientIpHeader::None || !compiled.is_trusted_proxy(peer) {
        return peer;
    }
    crate::forwarded::client_from_headers(headers, config.client_ip_header, config.trusted_hops)
        .unwrap_or_else(|| {
            tracing::debug!(
                %peer,
                header = config.client_ip_header.as_str(),
                "trusted proxy named no usable client address; counting the proxy itself"
            );
            peer
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_address_sources_in_order() {
        let a: SocketAddr = "127.0.0.2:1000".parse().unwrap();
        let b: SocketAddr = "127.0.0.3:1000".parse().unwrap();
        let mut ext = Extensions::new();
        assert_eq!(client_addr_of(&ext), None);
        ext.insert(a);
        assert_eq!(client_addr_of(&ext), Some(a));
        ext.insert(ClientAddr(b));
        assert_eq!(client_addr_of(&ext), Some(b));
        #[cfg(feature = "axum")]
        {
            ext.insert(axum::extract::ConnectInfo(a));
            assert_eq!(client_addr_of(&ext), Some(a));
        }
    }

    #[cfg(feature = "tonic")]
    #[test]
    fn tonic_connect_info_names_the_client() {
        use tonic::transport::server::TcpConnectInfo;
        let a: SocketAddr = "127.0.0.2:1000".parse().unwrap();
        let mut ext = Extensions::new();
        ext.insert(TcpConnectInfo {
            local_addr: None,
            remote_addr: None,
        });
        assert_eq!(client_addr_of(&ext), None, "no remote address, no client");
        ext.insert(TcpConnectInfo {
            local_addr: None,
            remote_addr: Some(a),
        });
        assert_eq!(client_addr_of(&ext), Some(a));
    }
}
