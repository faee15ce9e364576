//! [`TrackedIo`]: an accepted connection that carries its permit.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::deadlines::{timed_out, Deadline, DeadlineSettings, Deadlines, Side};
use crate::limiter::ConnPermit;
use crate::peer::PeerAddr;

pin_project! {
    /// An accepted connection counted by a [`Limiter`](crate::Limiter): the IO and its
    /// [`ConnPermit`].
    ///
    /// The permit lives exactly as long as the IO, so the connection stays counted through
    /// everything the server does with it — including an HTTP/1 upgrade, where hyper drops the
    /// per-connection service but moves the IO into the upgraded stream (a WebSocket stays
    /// counted until it closes). This is go-connlimit's `Wrap(conn, free)`.
    ///
    /// Reads and writes go straight to the inner IO; the wrapper adds no buffering. When the
    /// listener's config sets deadlines (`handshake_timeout`, `idle_timeout`,
    /// `min_receive_rate`), the connection checks them as it reads and writes: once one passes,
    /// the pending read or write fails with [`io::ErrorKind::TimedOut`] and every later one
    /// fails too, so the server drops the connection and its permit. The deadlines' timer wakes
    /// the tasks waiting on either side, so read and write halves driven by two different tasks
    /// (`tokio::io::split`) both see a passed deadline. With every deadline off,
    /// the wrapper keeps no deadline state and does no extra work per operation.
    #[derive(Debug)]
    pub struct TrackedIo<IO> {
        #[pin]
        io: IO,
        permit: ConnPermit,
        peer: SocketAddr,
        deadlines: Option<Pin<Box<Deadlines>>>,
    }
}

impl<IO> TrackedIo<IO> {
    /// Wraps `io`, accepted from `peer`, with the permit that counts it. No deadlines apply to a
    /// connection wrapped this way; the listener adds the config's.
    pub fn new(io: IO, permit: ConnPermit, peer: SocketAddr) -> Self {
        TrackedIo {
            io,
            permit,
            peer,
            deadlines: None,
        }
    }

    /// The same connection, watched by `settings`' deadlines from now on.
    pub(super) fn with_deadlines(mut self, settings: Option<DeadlineSettings>) -> Self {
        self.deadlines = settings.map(|s| Box::pin(Deadlines::new(s)));
        self
    }

    /// The inner IO.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// The inner IO, mutably.
    pub fn get_mut(&mut self) -> &mut IO {
        &mut self.io
    }

    /// The permit that counts this connection.
    pub fn permit(&self) -> &ConnPermit {
        &self.permit
    }

    /// The remote address the connection was accepted from.
    pub fn remote_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Splits the connection into its IO and its permit; the connection stays counted until the
    /// permit is dropped.
    pub fn into_parts(self) -> (IO, ConnPermit) {
        (self.io, self.permit)
    }
}

/// The error for a deadline that has just passed: counted once, here, in the limiter's stats.
fn deadline_passed(permit: &ConnPermit, peer: SocketAddr, why: Deadline) -> io::Error {
    permit.count_closed(why.name());
    tracing::debug!(%peer, client = %permit.client_key(), reason = why.name(), "connection deadline passed");
    timed_out(why)
}

/// Runs one IO operation on `side` under the deadlines: bytes moved are noted (and may break
/// the minimum receive rate), waiting polls the deadline timer.
fn under_deadlines<T>(
    deadlines: &mut Option<Pin<Box<Deadlines>>>,
    permit: &ConnPermit,
    peer: SocketAddr,
    cx: &mut Context<'_>,
    side: Side,
    moved: impl Fn(&T) -> usize,
    op: impl FnOnce(&mut Context<'_>) -> Poll<io::Result<T>>,
) -> Poll<io::Result<T>> {
    let Some(deadlines) = deadlines else {
        return op(cx);
    };
    if let Some(why) = deadlines.expired() {
        return Poll::Ready(Err(timed_out(why)));
    }
    let why = match op(cx) {
        Poll::Ready(Ok(value)) => match deadlines.as_mut().moved(side, moved(&value)) {
            Ok(()) => return Poll::Ready(Ok(value)),
            Err(why) => why,
        },
        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
        Poll::Pending => ready!(deadlines.as_mut().poll_expired(side, cx)),
    };
    Poll::Ready(Err(deadline_passed(permit, peer, why)))
}

impl<IO> PeerAddr for TrackedIo<IO> {
    #[inline]
    fn peer_addr(&self) -> Option<SocketAddr> {
        Some(self.peer)
    }
}

impl<IO> TrackedIo<IO> {
    /// Runs one operation of the inner IO on `side` under the deadlines (see
    /// [`under_deadlines`]); `moved` says how many bytes a finished operation moved.
    #[inline]
    fn watched<T>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        side: Side,
        moved: impl Fn(&T) -> usize,
        op: impl FnOnce(Pin<&mut IO>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let this = self.project();
        let io = this.io;
        under_deadlines(
            this.deadlines,
            this.permit,
            *this.peer,
            cx,
            side,
            moved,
            |cx| op(io, cx),
        )
    }
}

impl<IO: AsyncRead> AsyncRead for TrackedIo<IO> {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        self.watched(
            cx,
            Side::Read,
            |n| *n,
            |io, cx| {
                io.poll_read(cx, buf)
                    .map_ok(|()| buf.filled().len() - before)
            },
        )
        .map_ok(|_| ())
    }
}

impl<IO: AsyncWrite> AsyncWrite for TrackedIo<IO> {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.watched(cx, Side::Write, |n| *n, |io, cx| io.poll_write(cx, buf))
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.watched(cx, Side::Write, |()| 0, |io, cx| io.poll_flush(cx))
    }

    #[inline]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.watched(cx, Side::Write, |()| 0, |io, cx| io.poll_shutdown(cx))
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.watched(
            cx,
            Side::Write,
            |n| *n,
            |io, cx| io.poll_write_vectored(cx, bufs),
        )
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
