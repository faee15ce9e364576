//! [`TrackedIo`]: an accepted connection that carries its permit.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{ConnPermit, PeerAddr};

pin_project! {
    /// An accepted connection counted by a [`Limiter`](crate::Limiter): the IO and its
    /// [`ConnPermit`].
    ///
    /// The permit lives exactly as long as the IO, so the connection stays counted through
    /// everything the server does with it — including an HTTP/1 upgrade, where hyper drops the
    /// per-connection service but moves the IO into the upgraded stream (a WebSocket stays
    /// counted until it closes). This is go-connlimit's `Wrap(conn, free)`.
    ///
    /// Reads and writes go straight to the inner IO; the wrapper adds no buffering and no work
    /// per byte.
    #[derive(Debug)]
    pub struct TrackedIo<IO> {
        #[pin]
        io: IO,
        permit: ConnPermit,
        peer: SocketAddr,
    }
}

impl<IO> TrackedIo<IO> {
    /// Wraps `io`, accepted from `peer`, with the permit that counts it.
    pub fn new(io: IO, permit: ConnPermit, peer: SocketAddr) -> Self {
        TrackedIo { io, permit, peer }
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

impl<IO> PeerAddr for TrackedIo<IO> {
    #[inline]
    fn peer_addr(&self) -> Option<SocketAddr> {
        Some(self.peer)
    }
}

impl<IO: AsyncRead> AsyncRead for TrackedIo<IO> {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite> AsyncWrite for TrackedIo<IO> {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    #[inline]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
