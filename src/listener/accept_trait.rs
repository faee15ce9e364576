//! [`Accept`]: where a server's connections come from, as one open trait that the
//! [`ConnLimitListener`](super::ConnLimitListener) wraps and `serve::Serve`
//! serves, in the manner of axum's `serve::Listener`. It is named for what a listener does, as
//! hyper 0.14's was, so that it never collides with axum's `Listener` in a server that uses
//! both.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::limiter::ConnPermit;

/// A listener: where a server's connections come from. Tokio's `TcpListener` or `UnixListener`, a
/// [`ConnLimitListener`](super::ConnLimitListener) around one, or one of your own: TLS on top
/// of a `ConnLimitListener`, say, so that a refused peer never gets a handshake
/// (`examples/tls.rs`).
///
/// ```
/// use std::io;
/// use tower_connlimit::listener::Accept;
/// use tower_connlimit::ConnPermit;
///
/// /// Every connection of `L`, logged as it is accepted.
/// struct Logged<L>(L);
///
/// impl<L: Accept> Accept for Logged<L>
/// where
///     L::Addr: std::fmt::Debug,
/// {
///     type Io = L::Io;
///     type Addr = L::Addr;
///
///     async fn accept(&mut self) -> io::Result<(Self::Io, Self::Addr)> {
///         let (io, addr) = self.0.accept().await?;
///         println!("accepted {addr:?}");
///         Ok((io, addr))
///     }
///
///     fn local_addr(&self) -> io::Result<Self::Addr> {
///         self.0.local_addr()
///     }
///
///     // Keeps the permit of a `ConnLimitListener` inside visible to `Serve`.
///     fn permit(io: &Self::Io) -> Option<&ConnPermit> {
///         L::permit(io)
///     }
/// }
/// ```
pub trait Accept: Send + 'static {
    /// The connections it accepts.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Where they come from.
    type Addr: Send;

    /// The next connection, and where it comes from.
    ///
    /// # Errors
    ///
    /// What accepting failed with (out of file descriptors, say); the caller decides whether
    /// to back off and try again (`serve::Serve` pauses and goes on).
    ///
    /// # Cancel safety
    ///
    /// Implementations should be cancel safe, as tokio's listeners are: a server races
    /// `accept` against its shutdown signal.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Io, Self::Addr)>> + Send;

    /// The address it is bound to.
    ///
    /// # Errors
    ///
    /// When it has none to tell.
    fn local_addr(&self) -> io::Result<Self::Addr>;

    /// The permit that counts `io`, when a limiter admitted it: how a server on top (such as
    /// `serve::Serve`, which counts the connections its header timeout cuts)
    /// reaches it. `None` by default; a listener wrapping another passes its inner one's on.
    fn permit(io: &Self::Io) -> Option<&ConnPermit> {
        let _ = io;
        None
    }
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Io, Self::Addr)>> + Send {
        tokio::net::TcpListener::accept(self)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        tokio::net::TcpListener::local_addr(self)
    }
}

#[cfg(unix)]
impl Accept for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    type Addr = tokio::net::unix::SocketAddr;

    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Io, Self::Addr)>> + Send {
        tokio::net::UnixListener::accept(self)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        tokio::net::UnixListener::local_addr(self)
    }
}
