//! [`ConnLimitListener`] as an axum `Listener`, for `axum::serve`.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::serve::TapIo;

use super::{Accept, ConnLimitListener, RejectableIo, TrackedIo};
use crate::peer::PeerAddr;

/// [`ConnLimitListener`] ready for `axum::serve` with `ConnectInfo`; see
/// [`ConnLimitListener::for_axum`].
pub type AxumListener<L> = TapIo<ConnLimitListener<L>, fn(&mut TrackedIo<<L as Accept>::Io>)>;

/// How long accepting pauses after an error that is not one connection's own (out of file
/// descriptors, say), as axum's own listeners do.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

impl<L> axum::serve::Listener for ConnLimitListener<L>
where
    L: Accept,
    L::Io: RejectableIo,
    L::Addr: PeerAddr,
{
    type Io = TrackedIo<L::Io>;
    type Addr = SocketAddr;

    /// Accepts the next connection under the limits ([`Accept::accept`]). Like every axum
    /// listener, it never fails: an error of one connection is skipped, any other is logged and
    /// accepting pauses a second, as axum's `TcpListener` does. The address is the client's
    /// (with [`ProxyProtocol::Required`](super::ProxyProtocol::Required), the one the PROXY
    /// header names).
    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match Accept::accept(self).await {
                Ok(accepted) => return accepted,
                Err(err) if is_connection_error(&err) => {}
                Err(err) => {
                    tracing::error!(%err, "accept failed; pausing before the next accept");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Accept::local_addr(self)
    }
}

/// Whether `err` is about one connection only (the peer went away while it was accepted).
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

impl<L> ConnLimitListener<L>
where
    L: Accept,
    L::Io: RejectableIo,
    L::Addr: PeerAddr,
{
    /// This listener in the form `axum::serve` needs for `ConnectInfo<SocketAddr>`.
    ///
    /// axum implements its `Connected` trait for the addresses of `TcpListener` and of its own
    /// `TapIo` wrapper only, and Rust's orphan rule lets no other crate add an impl for
    /// `SocketAddr`. This returns the listener inside a no-op `TapIo`, so
    /// `into_make_service_with_connect_info::<SocketAddr>()` works unchanged.
    pub fn for_axum(self) -> AxumListener<L> {
        axum::serve::ListenerExt::tap_io(self, keep_as_is::<L::Io>)
    }
}

fn keep_as_is<IO>(_: &mut TrackedIo<IO>) {}
