//! Admission at accept: refuse a connection before a byte of it is read.
//!
//! [`ConnLimitListener`] wraps a listener. Each accepted connection is checked against the
//! [`Limiter`]; one over a limit is refused at once (see [`RejectAction`]) and the accept loop
//! moves on, and one under the limits is yielded as a [`TrackedIo`] that carries its
//! [`ConnPermit`](crate::ConnPermit). This is the cheapest and strongest admission point: it
//! works for every protocol on top (HTTP/1, HTTP/2, WebSocket, TLS, raw TCP), keeps upgraded
//! connections counted, and spends nothing on a refused peer.
//!
//! # With `axum::serve`
//!
//! With the `axum` feature, [`ConnLimitListener::for_axum`] gives a listener for
//! `axum::serve` whose `ConnectInfo<SocketAddr>` works as with a bare `TcpListener`:
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use axum::{extract::ConnectInfo, routing::get, Router};
//! use tower_connlimit::{Config, ConnLimitListener, Limiter};
//!
//! # async fn run() -> std::io::Result<()> {
//! let limiter = Limiter::new(Config { max_conns_per_client: 10, ..Config::default() });
//! let tcp = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! let app = Router::new().route(
//!     "/",
//!     get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { format!("hello {peer}") }),
//! );
//! axum::serve(
//!     ConnLimitListener::new(tcp, limiter).for_axum(),
//!     app.into_make_service_with_connect_info::<SocketAddr>(),
//! )
//! .await
//! # }
//! ```
//!
//! `ConnLimitListener` itself also implements axum's `Listener`, for `axum::serve(listener, app)`
//! without connection info and for composing with other listener wrappers. Put TLS *on top of*
//! this listener, so that a refused peer never gets a handshake.
//!
//! # Deadlines and the PROXY protocol
//!
//! The listener applies the config's connection deadlines (`handshake_timeout`, `idle_timeout`,
//! `min_receive_rate`) to every connection it admits, inside [`TrackedIo`], and with
//! [`ProxyProtocol::Required`] it reads each trusted proxy's PROXY header before admitting the
//! client it names; see [`Config`](crate::Config) for both. Both need tokio's time driver
//! (`enable_time`, on in `#[tokio::main]`).
//!
//! # With a plain tokio accept loop
//!
//! ```no_run
//! use tower_connlimit::{Config, ConnLimitListener, Limiter};
//! use tokio::io::AsyncWriteExt;
//!
//! # async fn run() -> std::io::Result<()> {
//! let limiter = Limiter::new(Config { max_conns_per_client: 10, ..Config::default() });
//! let listener = ConnLimitListener::new(tokio::net::TcpListener::bind("127.0.0.1:7000").await?, limiter);
//! loop {
//!     // Refused connections are closed inside `accept`; only admitted ones come out.
//!     let (mut io, peer) = listener.accept().await?;
//!     tokio::spawn(async move {
//!         let _ = io.write_all(b"hello\n").await;
//!         // `io` drops here, and with it the permit.
//!     });
//! }
//! # }
//! ```

mod deadlines;
mod header_reads;
mod incoming;
// `pub(crate)` for the `__fuzz` entry points in lib.rs.
pub(crate) mod proxy_protocol;
mod reject;
mod tracked_io;

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

pub(crate) use self::deadlines::DeadlineSettings;
pub use self::deadlines::MinReceiveRate;
use self::header_reads::{Finished, HeaderReads};
pub use self::proxy_protocol::ProxyProtocol;
use self::proxy_protocol::{read_header, InvalidHeader};
use self::reject::Rejector;
pub use self::reject::{RejectAction, RejectableIo};
pub use self::tracked_io::TrackedIo;
use crate::limiter::Cause;
use crate::Limiter;

/// A finished PROXY header read: the connection, its peer, and what the header said.
struct HeaderRead<IO> {
    io: IO,
    proxy: SocketAddr,
    header: Result<Result<Option<SocketAddr>, InvalidHeader>, tokio::time::error::Elapsed>,
}

pin_project_lite::pin_project! {
    /// A listener that admits connections through a [`Limiter`]. See the [module docs](self).
    ///
    /// The wrapper owns the inner listener, or the inner stream of accepted connections; the
    /// limiter is shared, so the same limits and counts can also be enforced by layers elsewhere
    /// in the server.
    pub struct ConnLimitListener<L> {
        #[pin]
        inner: L,
        limiter: Limiter,
        rejector: Rejector,
        header_reads: HeaderReads,
        max_pending_headers: usize,
    }
}

impl<L> ConnLimitListener<L> {
    /// Wraps `inner`, admitting its connections through `limiter`.
    pub fn new(inner: L, limiter: Limiter) -> Self {
        ConnLimitListener {
            inner,
            limiter,
            rejector: Rejector::default(),
            header_reads: HeaderReads::new(),
            max_pending_headers: 1024,
        }
    }

    /// How to refuse a connection over the limit; [`RejectAction::Close`] by default.
    pub fn reject_with(mut self, action: RejectAction) -> Self {
        self.rejector.action = action;
        self
    }

    /// How long a [`RejectAction::HttpResponse`] refusal may take to write its answer and see the
    /// client close, before the connection is dropped regardless. Default 2 seconds.
    pub fn reject_deadline(mut self, deadline: Duration) -> Self {
        self.rejector.deadline = deadline;
        self
    }

    /// How many [`RejectAction::HttpResponse`] refusals may be in progress at once; past that,
    /// refusals just close. Default 64.
    pub fn max_pending_rejections(mut self, max: usize) -> Self {
        self.rejector.max_pending = max;
        self
    }

    /// How many PROXY headers (see [`Config::proxy_protocol`](crate::Config::proxy_protocol))
    /// may be read at once. Past that, the oldest read is abandoned and its connection closed,
    /// counted in [`RejectedStats::proxy_header_timeout`](crate::RejectedStats::proxy_header_timeout):
    /// the oldest is the likeliest to be a silent peer (AWS NLB, for one, sends the header only
    /// with the client's first bytes), so a flood of silent connections only pushes out its own
    /// while honest headers, which arrive at once, keep getting through. Default 1024; at least 1.
    pub fn max_pending_proxy_headers(mut self, max: usize) -> Self {
        self.max_pending_headers = max.max(1);
        self
    }

    /// The limiter this listener admits through.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// The inner listener.
    pub fn get_ref(&self) -> &L {
        &self.inner
    }

    /// The inner listener, mutably.
    pub fn get_mut(&mut self) -> &mut L {
        &mut self.inner
    }

    /// The inner listener, unwrapped.
    pub fn into_inner(self) -> L {
        self.inner
    }

    /// Deals with a freshly accepted connection: admits it (returning it with its client's
    /// address), refuses it, or, when a PROXY header is expected, starts reading that.
    fn on_accept<IO: RejectableIo>(
        &self,
        io: IO,
        peer: Option<SocketAddr>,
    ) -> Option<(TrackedIo<IO>, SocketAddr)> {
        let Some(peer) = peer else {
            crate::addr::report_missing_address(
                &self.limiter,
                crate::limiter::Kind::Connection,
                crate::AdmissionPoint::Listener,
                "ConnLimitListener refused a connection with no IP peer address: \
                 wrap a listener whose connections have IP peers",
            );
            return None;
        };
        let config = self.limiter.compiled();
        if config.config.proxy_protocol == ProxyProtocol::Off {
            return self.admit(io, peer, config.deadlines);
        }
        if !config.is_trusted_proxy(peer.ip()) {
            self.limiter
                .refused_at_listener(Cause::ProxyUntrusted, Some(peer.ip()));
            return None;
        }
        let deadline = config.config.proxy_header_timeout;
        let evicted = self
            .header_reads
            .start(self.max_pending_headers, async move {
                let mut io = io;
                let header = tokio::time::timeout(deadline, read_header(&mut io)).await;
                Box::new(HeaderRead {
                    io,
                    proxy: peer,
                    header,
                }) as Finished
            });
        if evicted {
            // The oldest read's peer is not known here; its refusal is counted all the same.
            self.limiter
                .refused_at_listener(Cause::ProxyHeaderTimeout, None);
        }
        None
    }

    /// Admits (or refuses) a connection whose PROXY header read has finished.
    fn on_header<IO: RejectableIo>(&self, read: Finished) -> Option<(TrackedIo<IO>, SocketAddr)> {
        // Only this listener's accept loop adds reads, all of its own IO type.
        let read = read.downcast::<HeaderRead<IO>>().ok()?;
        let HeaderRead { io, proxy, header } = *read;
        match header {
            Ok(Ok(source)) => {
                let deadlines = self.limiter.compiled().deadlines;
                self.admit(io, source.unwrap_or(proxy), deadlines)
            }
            Ok(Err(InvalidHeader)) => {
                self.limiter
                    .refused_at_listener(Cause::ProxyHeaderInvalid, Some(proxy.ip()));
                None
            }
            Err(_elapsed) => {
                self.limiter
                    .refused_at_listener(Cause::ProxyHeaderTimeout, Some(proxy.ip()));
                None
            }
        }
    }

    /// Counts `io` if `client` is under the limits, otherwise refuses it and returns `None`. An
    /// admitted connection is watched by `deadlines`, from the config the caller already loaded.
    fn admit<IO: RejectableIo>(
        &self,
        io: IO,
        client: SocketAddr,
        deadlines: Option<DeadlineSettings>,
    ) -> Option<(TrackedIo<IO>, SocketAddr)> {
        match self
            .limiter
            .try_acquire_at(client.ip(), crate::AdmissionPoint::Listener)
        {
            Ok(permit) => Some((
                TrackedIo::new(io, permit, client).with_deadlines(deadlines),
                client,
            )),
            Err(rejected) => {
                self.rejector.reject(io, rejected);
                None
            }
        }
    }
}

/// Which of two futures finished first.
enum Either<A, B> {
    First(A),
    Second(B),
}
use Either::{First, Second};

/// Runs `a` and `b` until one finishes (`a` is polled first), dropping the other.
async fn first_of<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    let (mut a, mut b) = (pin!(a), pin!(b));
    poll_fn(|cx| {
        if let Poll::Ready(out) = a.as_mut().poll(cx) {
            return Poll::Ready(First(out));
        }
        b.as_mut().poll(cx).map(Second)
    })
    .await
}

impl ConnLimitListener<TcpListener> {
    /// Accepts the next connection that is under the limits, refusing the others as configured.
    /// The address returned is the client's: the peer's, or with
    /// [`ProxyProtocol::Required`] the one its PROXY header names.
    ///
    /// # Errors
    ///
    /// The inner listener's accept error, as `TcpListener::accept` returns it (for example
    /// `EMFILE` when out of file descriptors); the caller decides whether to back off and retry.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, like `TcpListener::accept`: a connection is either returned or, if it was
    /// refused, already dealt with.
    pub async fn accept(&self) -> io::Result<(TrackedIo<TcpStream>, SocketAddr)> {
        loop {
            let admitted = match first_of(self.header_reads.next(), self.inner.accept()).await {
                First(read) => self.on_header(read),
                Second(accepted) => {
                    let (io, peer) = accepted?;
                    self.on_accept(io, Some(peer))
                }
            };
            if let Some(admitted) = admitted {
                return Ok(admitted);
            }
        }
    }

    /// The local address the inner listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl<L: fmt::Debug> fmt::Debug for ConnLimitListener<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnLimitListener")
            .field("inner", &self.inner)
            .field("reject_with", &self.rejector.action)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "axum")]
mod axum_listener {
    use super::*;
    use crate::PeerAddr;
    use axum::serve::{Listener, ListenerExt, TapIo};

    /// [`ConnLimitListener`] ready for `axum::serve` with `ConnectInfo`; see
    /// [`ConnLimitListener::for_axum`].
    pub type AxumListener<L> = TapIo<ConnLimitListener<L>, fn(&mut TrackedIo<<L as Listener>::Io>)>;

    impl<L> Listener for ConnLimitListener<L>
    where
        L: Listener,
        L::Io: RejectableIo,
        L::Addr: PeerAddr + From<SocketAddr>,
    {
        type Io = TrackedIo<L::Io>;
        type Addr = L::Addr;

        /// Accepts the next connection under the limits. Like every axum listener, it never
        /// fails: the inner listener handles its own accept errors. The address is the
        /// client's (with [`ProxyProtocol::Required`], the one the PROXY header names).
        ///
        /// With [`ProxyProtocol::Required`], the inner listener's `accept` must be cancel safe,
        /// as `TcpListener`'s is: it is raced against the PROXY header reads in progress.
        async fn accept(&mut self) -> (Self::Io, Self::Addr) {
            loop {
                let admitted = match first_of(self.header_reads.next(), self.inner.accept()).await {
                    First(read) => self.on_header(read),
                    Second((io, addr)) => self.on_accept(io, addr.peer_addr()),
                };
                if let Some((tracked, client)) = admitted {
                    return (tracked, L::Addr::from(client));
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
}

#[cfg(feature = "axum")]
pub use self::axum_listener::AxumListener;
