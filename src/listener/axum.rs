//! [`ConnLimitListener`] as an axum `Listener`, and around any axum `Listener`.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;

use axum::serve::{Listener, ListenerExt, TapIo};

use super::accept::Outcome;
use super::{sealed, Accept, ConnLimitListener, RejectableIo, TrackedIo};
use crate::peer::PeerAddr;

/// [`ConnLimitListener`] ready for `axum::serve` with `ConnectInfo`; see
/// [`ConnLimitListener::for_axum`].
pub type AxumListener<L> = TapIo<ConnLimitListener<L>, fn(&mut TrackedIo<<L as Listener>::Io>)>;

impl<L> sealed::Sealed for L where L: Listener {}

impl<L> Accept for L
where
    L: Listener,
    L::Io: RejectableIo,
{
    type Io = L::Io;
}

impl<L> Listener for ConnLimitListener<L>
where
    L: Listener,
    L::Io: RejectableIo,
    L::Addr: PeerAddr + From<SocketAddr>,
{
    type Io = TrackedIo<L::Io>;
    type Addr = L::Addr;

    /// Accepts the next connection under the limits. Like every axum listener, it never
    /// fails: the inner listener handles its own accept errors. The address is the client's
    /// (with [`ProxyProtocol::Required`](crate::listener::ProxyProtocol::Required), the one the PROXY
    /// header names).
    ///
    /// With `ProxyProtocol::Required`, the inner listener's `accept` must be cancel safe, as
    /// `TcpListener`'s is: it is raced against the PROXY header reads in progress.
    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let ConnLimitListener { inner, path } = &mut *self;
            let accepted = async {
                let (io, addr) = inner.accept().await;
                let peer = addr.peer_addr();
                Some(Ok::<_, Infallible>((io, peer)))
            };
            match path.arrive(path.next(accepted).await) {
                Outcome::Wait => {}
                Outcome::Admitted(io, client) => return (io, L::Addr::from(client)),
                Outcome::Failed(never) => match never {},
                Outcome::Ended => unreachable!("an axum listener never ends"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl<L> ConnLimitListener<L>
where
    L: Listener,
    L::Io: RejectableIo,
    L::Addr: PeerAddr + From<SocketAddr> + Clone + Sync + 'static,
{
    /// This listener in the form `axum::serve` needs for `ConnectInfo<L::Addr>`
    /// (`ConnectInfo<SocketAddr>` over TCP).
    ///
    /// axum implements its `Connected` trait for the addresses of `TcpListener` and of its own
    /// `TapIo` wrapper only, and Rust's orphan rule lets no other crate add an impl for
    /// `SocketAddr`. This returns the listener inside a no-op `TapIo`, so
    /// `into_make_service_with_connect_info::<SocketAddr>()` works unchanged.
    pub fn for_axum(self) -> AxumListener<L> {
        self.tap_io(keep_as_is::<L::Io>)
    }
}

fn keep_as_is<IO>(_: &mut TrackedIo<IO>) {}
