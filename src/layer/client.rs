//! Who a request comes from: its peer, found in its extensions, or, behind a trusted proxy,
//! the client the proxy names in a header.

use std::net::{IpAddr, SocketAddr};

use http::{Extensions, HeaderMap};

use crate::client_ip::{client_from_headers, ClientIpConfig, ClientIpHeader, Unidentified};
use crate::limiter::{Limiter, Settings};

/// The client's socket address, as a request extension.
///
/// The connection level inserts it into every request of an admitted connection, so a
/// request-level [`ConnLimitLayer`](crate::ConnLimitLayer) further in finds the client even in a
/// hand-written hyper loop with no `ConnectInfo`. Insert it yourself in a custom server to tell
/// the request layer who the client is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub SocketAddr);

/// The client the request layer counted a request under: the peer, or the client a trusted
/// proxy named (a PROXY header at the listener, or [`ClientIpConfig::header`]). Inserted into
/// every request it admits, so that a handler needs no second parser, and no second set of
/// trust settings, to know who the client is.
///
/// With axum, take it as an extractor (feature `axum`): `async fn ip(client: ClientIp) -> String
/// { client.0.to_string() }`. With tonic, read it from the request's extensions:
/// `request.extensions().get::<ClientIp>()`. It is there only behind a request-level
/// [`ConnLimitLayer`](crate::ConnLimitLayer); the extractor answers 500 without one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientIp(pub IpAddr);

#[cfg(feature = "axum")]
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientIp {
    type Rejection = (http::StatusCode, &'static str);

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<ClientIp>().copied().ok_or_else(|| {
            tracing::error!(
                "ClientIp asked for, but no request-level ConnLimitLayer admitted the request: \
                 put `.layer(ConnLimitLayer::new(config))` on the router"
            );
            (
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "client address unknown",
            )
        })
    }
}

/// The peer of a request, from the first of: axum's `ConnectInfo<SocketAddr>`, a
/// [`ClientAddr`] extension, a plain `SocketAddr` extension, tonic's connect info.
pub(crate) fn peer_of(extensions: &Extensions) -> Option<SocketAddr> {
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
    if let Some(addr) = crate::tonic::peer_of(extensions) {
        return Some(addr);
    }
    None
}

/// Who a request is counted under, as [`client_of`] finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RequestClient {
    /// The address the request is counted under.
    pub(crate) ip: IpAddr,
    /// Set when the peer is a trusted proxy whose header names no usable client: `ip` is then
    /// the proxy's own, and this says what to do with the request.
    pub(crate) unidentified: Option<Unidentified>,
}

/// The client a request comes from: `peer`, or, when `peer` is a trusted proxy and
/// [`ClientIpConfig::header`] is set, the address the header names (see [`ClientIpHeader`]). A
/// trusted proxy's request whose header names no usable address is the proxy's own, marked
/// unidentified, so that the caller limits it (or refuses it) and counts it: it is never
/// exempt.
pub(crate) fn client_of(limiter: &Limiter, peer: IpAddr, headers: &HeaderMap) -> RequestClient {
    limiter.with_settings(|settings: &ClientIpConfig, limits| {
        let peer_itself = RequestClient {
            ip: peer,
            unidentified: None,
        };
        if settings.header == ClientIpHeader::None || !limits.is_trusted_proxy(peer) {
            return peer_itself;
        }
        match client_from_headers(headers, settings.header, settings.trusted_hops) {
            Some(named) => RequestClient {
                ip: named,
                unidentified: None,
            },
            None => RequestClient {
                unidentified: Some(settings.unidentified),
                ..peer_itself
            },
        }
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
        assert_eq!(peer_of(&ext), None);
        ext.insert(a);
        assert_eq!(peer_of(&ext), Some(a));
        ext.insert(ClientAddr(b));
        assert_eq!(peer_of(&ext), Some(b));
        #[cfg(feature = "axum")]
        {
            ext.insert(axum::extract::ConnectInfo(a));
            assert_eq!(peer_of(&ext), Some(a));
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
        assert_eq!(peer_of(&ext), None, "no remote address, no client");
        ext.insert(TcpConnectInfo {
            local_addr: None,
            remote_addr: Some(a),
        });
        assert_eq!(peer_of(&ext), Some(a));
    }
}
