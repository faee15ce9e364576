//! The connection level: [`ConnLimit`] around a make-service counts each connection.
//!
//! Each call of the make-service is a new connection: the client is read from the call's
//! target (a [`MakeTarget`]), admitted against the connection limits, and the per-connection
//! service the inner make-service returns is wrapped in a [`LimitedConnection`] that holds the
//! connection's permit for as long as the server keeps it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower_service::Service;

use super::conn_limit_layer::ConnLimit;
use super::connection::LimitedConnection;
use super::refusal::Refusal;
use crate::limiter::ConnPermit;
use crate::limiter::Kind;
use crate::listener::TrackedIo;
use crate::peer::{refuse_without_address, PeerAddr, NO_CLIENT_ADDRESS};

mod sealed {
    pub trait Sealed {}
}

/// A make-service target the connection level reads the client from, through its
/// [`PeerAddr`].
///
/// Sealed, and implemented for what servers pass their make-service: a `SocketAddr` (what a
/// hand-written hyper-util loop passes), axum's `IncomingStream`, tokio's `TcpStream`, a
/// [`TrackedIo`], and references to these. A custom server with a target of its own passes the
/// peer's `SocketAddr`. An `http::Request` is never a target, so [`ConnLimit`]'s two `Service`
/// impls can never overlap:
///
/// ```compile_fail
/// fn target<T: tower_connlimit::layer::MakeTarget>() {}
/// target::<http::Request<()>>();
/// ```
pub trait MakeTarget: PeerAddr + sealed::Sealed {}

impl<T: PeerAddr + sealed::Sealed + ?Sized> MakeTarget for T {}

impl sealed::Sealed for SocketAddr {}
impl sealed::Sealed for tokio::net::TcpStream {}
impl<IO> sealed::Sealed for TrackedIo<IO> {}
#[cfg(feature = "axum")]
impl<L: axum::serve::Listener> sealed::Sealed for axum::serve::IncomingStream<'_, L> {}
impl<T: sealed::Sealed + ?Sized> sealed::Sealed for &T {}

/// Connection level: the target names the peer; admit a connection.
impl<S, Target> Service<Target> for ConnLimit<S>
where
    S: Service<Target>,
    Target: MakeTarget,
{
    type Response = LimitedConnection<S::Response>;
    type Error = S::Error;
    type Future = MakeFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, target: Target) -> Self::Future {
        let Some(peer) = target.peer_addr() else {
            refuse_without_address(&self.make_service, Kind::Connection, FIX);
            return MakeFuture::refused(Refusal::new(&NO_CLIENT_ADDRESS, None));
        };
        match self.make_service.try_acquire(peer.ip()) {
            Ok(permit) => MakeFuture::admitted(self.inner.call(target), permit, peer),
            Err(rejected) => MakeFuture::refused(Refusal::from(rejected)),
        }
    }
}

const FIX: &str = "tower-connlimit cannot tell who the client is, so it refused the connection. \
    Fix: pass a make-service target with an IP peer (a `SocketAddr`)";

pin_project! {
    /// Future of the connection level: resolves to the per-connection
    /// [`LimitedConnection`], admitted (holding the connection's permit) or refusing.
    pub struct MakeFuture<F> {
        #[pin]
        state: MakeState<F>,
    }
}

pin_project! {
    #[project = MakeStateProj]
    enum MakeState<F> {
        Admitted { #[pin] fut: F, admission: Option<(ConnPermit, SocketAddr)> },
        Refused { refusal: Refusal },
    }
}

impl<F> MakeFuture<F> {
    fn admitted(fut: F, permit: ConnPermit, peer: SocketAddr) -> Self {
        MakeFuture {
            state: MakeState::Admitted {
                fut,
                admission: Some((permit, peer)),
            },
        }
    }

    fn refused(refusal: Refusal) -> Self {
        MakeFuture {
            state: MakeState::Refused { refusal },
        }
    }
}

impl<F, S, E> Future for MakeFuture<F>
where
    F: Future<Output = Result<S, E>>,
{
    type Output = Result<LimitedConnection<S>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            MakeStateProj::Admitted { fut, admission } => {
                let service = ready!(fut.poll(cx))?;
                let (permit, peer) = admission
                    .take()
                    .expect("MakeFuture polled after completion");
                Poll::Ready(Ok(LimitedConnection::admitted(
                    service,
                    Arc::new(permit),
                    peer,
                )))
            }
            MakeStateProj::Refused { refusal } => {
                Poll::Ready(Ok(LimitedConnection::refused(*refusal)))
            }
        }
    }
}

impl<F> std::fmt::Debug for MakeFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MakeFuture").finish_non_exhaustive()
    }
}
