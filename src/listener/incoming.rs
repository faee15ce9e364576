//! [`ConnLimitListener`] around a stream of accepted connections, such as tonic's `TcpIncoming`.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_core::{Stream, TryStream};

use super::accept::{Accepted, Outcome};
use super::{Accept, ConnLimitListener, RejectableIo, TrackedIo};
use crate::limiter::Limiter;
use crate::peer::PeerAddr;

/// A stream of accepted connections (tonic's `TcpIncoming`, or any
/// `Stream<Item = Result<IO, E>>`) as an [`Accept`] listener: see [`ConnLimitListener::from_stream`].
pub struct Incoming<S> {
    stream: Pin<Box<S>>,
}

impl<S> Incoming<S> {
    /// The connections of `stream`, as a listener.
    pub fn new(stream: S) -> Self {
        Incoming {
            stream: Box::pin(stream),
        }
    }

    /// The stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The stream, pinned, to poll it.
    pub fn get_pin_mut(&mut self) -> Pin<&mut S> {
        self.stream.as_mut()
    }

    /// The next connection of the stream and its peer, or `None` once the stream has ended.
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Option<Accepted<S::Ok, S::Error>>>
    where
        S: TryStream,
        S::Ok: PeerAddr,
    {
        self.stream.as_mut().try_poll_next(cx).map(|item| {
            item.map(|accepted| {
                accepted.map(|io| {
                    let peer = io.peer_addr();
                    (io, peer)
                })
            })
        })
    }
}

impl<S> std::fmt::Debug for Incoming<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming").finish_non_exhaustive()
    }
}

/// A stream as a listener: each item is a connection, the peer its IO's [`PeerAddr`]. A stream
/// that has ended makes `accept` fail with [`io::ErrorKind::UnexpectedEof`], every time.
impl<S> Accept for Incoming<S>
where
    S: TryStream + Send + 'static,
    S::Ok: RejectableIo + PeerAddr,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Io = S::Ok;
    type Addr = Option<SocketAddr>;

    async fn accept(&mut self) -> io::Result<(Self::Io, Self::Addr)> {
        match poll_fn(|cx| self.poll_accept(cx)).await {
            Some(accepted) => accepted.map_err(io::Error::other),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the stream of connections has ended",
            )),
        }
    }

    /// A stream has no address of its own.
    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(None)
    }
}

impl<S> ConnLimitListener<Incoming<S>>
where
    S: TryStream + Send + 'static,
    S::Ok: RejectableIo + PeerAddr,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Wraps a stream of accepted connections (tonic's `TcpIncoming`, or any
    /// `Stream<Item = Result<IO, E>>`), admitting them through `limiter`. The listener is then
    /// itself such a stream: it yields the admitted connections as [`TrackedIo`] and deals with
    /// the refused ones as [`accept`](ConnLimitListener::accept) does, so it can be handed to
    /// tonic's `serve_with_incoming` or to any server that takes a stream of connections.
    ///
    /// The client of each connection is its IO's [`PeerAddr`] (implemented for tokio's
    /// `TcpStream`; implement it, and [`RejectableIo`], for a custom IO type), or, with
    /// [`ProxyProtocol::Required`](super::ProxyProtocol::Required), the address its PROXY header
    /// names. The inner stream's errors are passed through as they are, and the stream ends when
    /// the inner one does; PROXY headers still being read then are abandoned with the listener.
    /// The stream need not be `Unpin`.
    pub fn from_stream(stream: S, limiter: Limiter) -> Self {
        ConnLimitListener::new(Incoming::new(stream), limiter)
    }
}

/// The stream form walks the accept path by polling, and ends when the inner stream does.
impl<S> Stream for ConnLimitListener<Incoming<S>>
where
    S: TryStream + Send + 'static,
    S::Ok: RejectableIo + PeerAddr,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Item = Result<TrackedIo<S::Ok>, S::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        let incoming = this.inner.get_mut();
        // With tokio's sockets, a flood of refused connections cannot keep this loop from
        // yielding: tokio's cooperative budget makes the inner accept return `Pending` now and
        // then.
        loop {
            let Some(arrival) = ready!(this.path.poll_next(cx, |cx| incoming.poll_accept(cx)))
            else {
                return Poll::Ready(None);
            };
            return Poll::Ready(Some(match this.path.arrive(arrival) {
                Outcome::Wait => continue,
                Outcome::Admitted(io, _client) => Ok(io),
                Outcome::Failed(error) => Err(error),
            }));
        }
    }
}
