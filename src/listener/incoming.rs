//! [`ConnLimitListener`] around a stream of connections, such as tonic's `TcpIncoming`.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_core::Stream;

use super::{ConnLimitListener, RejectableIo, TrackedIo};
use crate::PeerAddr;

/// Around a stream of accepted connections (tonic's `TcpIncoming`, or any
/// `Stream<Item = Result<IO, E>>`), the listener is itself such a stream: it yields the admitted
/// connections as [`TrackedIo`] and deals with the refused ones as `accept` does, so it can be
/// handed to tonic's `serve_with_incoming` or to any server that takes a stream of connections.
///
/// The client of each connection is its IO's [`PeerAddr`] (implemented for tokio's `TcpStream`;
/// implement it, and [`RejectableIo`], for a custom IO type), or, with
/// [`ProxyProtocol::Required`](crate::ProxyProtocol::Required), the address its PROXY header
/// names. The inner stream's errors are passed through as they are, and the stream ends when
/// the inner one does; PROXY headers still being read then are abandoned with the listener.
impl<S, IO, E> Stream for ConnLimitListener<S>
where
    S: Stream<Item = Result<IO, E>>,
    IO: RejectableIo + PeerAddr,
{
    type Item = Result<TrackedIo<IO>, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Poll::Ready(read) = self.as_mut().project().header_reads.poll_next(cx) {
                if let Some((admitted, _client)) = self.on_header::<IO>(read) {
                    return Poll::Ready(Some(Ok(admitted)));
                }
                continue;
            }
            // With tokio's sockets, a flood of refused connections cannot keep this loop from
            // yielding: tokio's cooperative budget makes the inner accept return `Pending` now
            // and then, as in `accept`'s loop.
            match ready!(self.as_mut().project().inner.poll_next(cx)) {
                Some(Ok(io)) => {
                    let peer = io.peer_addr();
                    if let Some((admitted, _client)) = self.on_accept(io, peer) {
                        return Poll::Ready(Some(Ok(admitted)));
                    }
                }
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => return Poll::Ready(None),
            }
        }
    }
}
