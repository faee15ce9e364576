//! [`ConnLimitListener`] around a stream of accepted connections, such as tonic's `TcpIncoming`.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_core::{Stream, TryStream};

use super::accept::{Accepted, Outcome};
use super::{sealed, Accept, ConnLimitListener, RejectableIo, TrackedIo};
use crate::limiter::Limiter;
use crate::peer::PeerAddr;

pin_project_lite::pin_project! {
    /// A stream of accepted connections (tonic's `TcpIncoming`, or any
    /// `Stream<Item = Result<IO, E>>`) as a [`ConnLimitListener`] wraps it; see
    /// [`ConnLimitListener::from_stream`].
    #[derive(Debug)]
    pub struct Incoming<S> {
        #[pin]
        stream: S,
    }
}

impl<S> Incoming<S> {
    /// The stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The stream, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// The stream, unwrapped.
    pub fn into_inner(self) -> S {
        self.stream
    }
}

impl<S> sealed::Sealed for Incoming<S> {}

impl<S> Accept for Incoming<S>
where
    S: TryStream,
    S::Ok: RejectableIo + PeerAddr,
{
    type Io = S::Ok;
}

impl<S> ConnLimitListener<Incoming<S>>
where
    S: TryStream,
    S::Ok: RejectableIo + PeerAddr,
{
    /// Wraps a stream of accepted connections (tonic's `TcpIncoming`, or any
    /// `Stream<Item = Result<IO, E>>`), admitting them through `limiter`. The listener is then
    /// itself such a stream: it yields the admitted connections as [`TrackedIo`] and deals with
    /// the refused ones as [`accept`](ConnLimitListener::accept) does, so it can be handed to
    /// tonic's `serve_with_incoming` or to any server that takes a stream of connections.
    ///
    /// The client of each connection is its IO's [`PeerAddr`] (implemented for tokio's
    /// `TcpStream`; implement it, and [`RejectableIo`], for a custom IO type), or, with
    /// [`ProxyProtocol::Required`](crate::listener::ProxyProtocol::Required), the address its PROXY header
    /// names. The inner stream's errors are passed through as they are, and the stream ends when
    /// the inner one does; PROXY headers still being read then are abandoned with the listener.
    /// The stream need not be `Unpin`.
    pub fn from_stream(stream: S, limiter: Limiter) -> Self {
        ConnLimitListener::new(Incoming { stream }, limiter)
    }
}

impl<S> Stream for ConnLimitListener<Incoming<S>>
where
    S: TryStream,
    S::Ok: RejectableIo + PeerAddr,
{
    type Item = Result<TrackedIo<S::Ok>, S::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        let mut stream = this.inner.project().stream;
        // With tokio's sockets, a flood of refused connections cannot keep this loop from
        // yielding: tokio's cooperative budget makes the inner accept return `Pending` now and
        // then.
        loop {
            let arrival = ready!(this.path.poll_next(cx, |cx| {
                stream
                    .as_mut()
                    .try_poll_next(cx)
                    .map(|item| -> Accepted<_, _> {
                        item.map(|accepted| {
                            accepted.map(|io| {
                                let peer = io.peer_addr();
                                (io, peer)
                            })
                        })
                    })
            }));
            return Poll::Ready(match this.path.arrive(arrival) {
                Outcome::Wait => continue,
                Outcome::Admitted(io, _client) => Some(Ok(io)),
                Outcome::Failed(error) => Some(Err(error)),
                Outcome::Ended => None,
            });
        }
    }
}
