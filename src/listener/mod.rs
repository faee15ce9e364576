//! Admission at accept: refuse a connection before a byte of it is read.
//!
//! [`ConnLimitListener`] wraps a listener, or a stream of accepted connections. Each accepted
//! connection is checked against the [`Limiter`]; one over a limit is refused at once (see
//! [`RejectAction`]) and accepting moves on, and one under the limits comes out as a
//! [`TrackedIo`] that carries its [`ConnPermit`](crate::ConnPermit). This is the cheapest and
//! strongest admission point: it works for every protocol on top (HTTP/1, HTTP/2, WebSocket,
//! TLS, raw TCP), keeps upgraded connections counted, and spends nothing on a refused peer. Its
//! counts are those of the admission point `listener` in [`Stats`](crate::Stats).
//!
//! It wraps anything that implements [`Accept`], the crate's listener trait, and is itself one,
//! so the one accept path (`accept.rs`) serves every form:
//!
//! - around tokio's `TcpListener` or `UnixListener`, or a listener of yours:
//!   [`ConnLimitListener::accept`] in a plain accept loop (below), `serve::Serve` (feature
//!   `serve`), or any server written over [`Accept`];
//! - as an axum `Listener` (feature `axum`) for `axum::serve`, with `for_axum()` for
//!   `ConnectInfo<SocketAddr>` (an `AxumListener`);
//! - around a stream of accepted connections ([`ConnLimitListener::from_stream`]: tonic's
//!   `TcpIncoming`, say), itself such a stream, for `serve_with_incoming`.
//!
//! The guide's [which admission point](crate::guide::admission_points) sets each one up and
//! compares this point with the layers.
//!
//! ```no_run
//! use tower_connlimit::{Config, ConnLimitListener, Limiter};
//! use tokio::io::AsyncWriteExt;
//!
//! # async fn run() -> std::io::Result<()> {
//! let limiter = Limiter::new(Config { max_conns_per_client: 10, ..Config::default() });
//! let tcp = tokio::net::TcpListener::bind("127.0.0.1:7000").await?;
//! let mut listener = ConnLimitListener::new(tcp, limiter);
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
//!
//! With `axum::serve`, `for_axum()` is what makes `ConnectInfo<SocketAddr>` work: axum
//! implements its `Connected` trait only for `TcpListener` and its own `TapIo` wrapper, and
//! Rust's orphan rule lets no other crate add one for `SocketAddr`, so `for_axum()` wraps the
//! listener in a no-op `TapIo`. Without connection info, `axum::serve(ConnLimitListener::new(tcp,
//! limiter), app)` works as well.
//!
//! Put TLS *on top of* this listener, as a listener of your own around it (`examples/tls.rs`),
//! so that a refused peer never gets a handshake. A Unix socket's peer has no IP address: it is
//! counted as `127.0.0.1` (see [`PeerAddr`]).
//!
//! # Refusing
//!
//! How a refused connection is told ([`ConnLimitListener::reject_with`]):
//!
//! - [`RejectAction::Close`] (default): the socket is closed. A client that already sent its
//!   request sees a reset, because the kernel resets a socket closed with unread input.
//! - [`RejectAction::Reset`]: an immediate RST (`SO_LINGER` 0), no `TIME_WAIT` on the server.
//! - [`RejectAction::HttpResponse`]: once the client starts its request, a canned
//!   `HTTP/1.1 429 Too Many Requests` (`503` when the server as a whole is full), written by a
//!   task of its own, off the accept path, within `reject_deadline` (2 s) and at most
//!   `max_pending_rejections` (64) at once. Past the cap, refusals just close, so a slow client
//!   can never stall accepting. The answer is plaintext HTTP/1.1: for TLS or h2c-only
//!   listeners use `Close` or `Reset`.
//!
//! # Deadlines
//!
//! A connection that never finishes its handshake, or trickles its request a byte at a time,
//! holds a permit and a task for as long as the server lets it. The listener puts the deadlines
//! of the config's [`ListenerConfig`] on every connection it admits, inside [`TrackedIo`]:
//! a first-byte `handshake_timeout`, an `idle_timeout`, and a [`MinReceiveRate`] in the style of
//! Apache `mod_reqtimeout`. When one passes, the connection's pending read or write fails with
//! `TimedOut`, the server drops it, and the permit is released; [`Stats::closed`] counts them by
//! deadline (`handshake_timeout`, `idle_timeout`, `min_receive_rate`). The deadlines are read
//! from the config at accept, so `set_config` changes them for new connections; they need
//! tokio's time driver (`enable_time`, on in `#[tokio::main]`).
//!
//! **Set a `handshake_timeout` in production.** Besides slow clients, it closes the connections
//! whose client vanished before it ever spoke: when an accept queue overflows, a few server
//! sockets can stay established with nobody behind them, and the limiter rightly counts them
//! until something closes them.
//!
//! The deadlines cover a connection's first phase and its idle spells; the guide's
//! [slow clients](crate::guide::the_gate#slow-clients) says how to choose them, and how
//! `serve::Serve` bounds every request's headers after the first.
//!
//! # The PROXY protocol
//!
//! Behind HAProxy, an AWS NLB or Envoy, every connection comes from the balancer. With
//! [`ProxyProtocol::Required`] (feature `proxy-protocol`), the listener reads the PROXY header
//! (v1 or v2) that each of the config's `trusted_proxies` sends, before admitting the client it
//! names: its key, `ConnectInfo` and [`TrackedIo::remote_addr`] are the real client's. A
//! connection from any other peer is closed before a byte is read; a malformed, missing or late
//! header closes it too, each counted in [`Stats::rejected`] (`proxy_untrusted`,
//! `proxy_header_invalid`, `proxy_header_timeout`). A v2 header is checked for structure before
//! it is believed: its declared length must be exactly what follows its fixed part, its
//! family's address block must fit in it, the rest must be whole TLVs, and a CRC32c TLV must
//! match; one that does not is malformed (`proxy_header_invalid`). Headers are read in tasks of
//! their own, at most `max_pending_proxy_headers` (a builder method, 1024 by default) at once,
//! so a slow proxy connection never stalls accepting. The guide's
//! [behind proxies](crate::guide::behind_proxies) puts this together with client address
//! headers and trusted proxies.
//!
//! [`Stats::closed`]: crate::Stats::closed
//! [`Stats::rejected`]: crate::Stats::rejected

mod accept;
mod accept_trait;
#[cfg(feature = "axum")]
mod axum;
mod deadlines;
#[cfg(feature = "proxy-protocol")]
mod header_reads;
mod incoming;
// `pub(crate)` for the `__fuzz` entry points in lib.rs.
#[cfg(feature = "proxy-protocol")]
pub(crate) mod proxy_protocol;
mod reject;
mod settings;
mod tracked_io;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use self::accept::{AcceptPath, Outcome};
pub use self::accept_trait::Accept;
#[cfg(feature = "axum")]
pub use self::axum::AxumListener;
pub use self::deadlines::MinReceiveRate;
#[cfg(feature = "serve")]
pub(crate) use self::deadlines::HEADER_TIMEOUT;
pub use self::incoming::Incoming;
pub use self::reject::{RejectAction, RejectableIo};
pub(crate) use self::settings::ListenerSettings;
pub use self::settings::{ListenerConfig, ProxyProtocol};
pub use self::tracked_io::TrackedIo;
use crate::limiter::{AdmissionPoint, Limiter};
pub use crate::peer::PeerAddr;
use crate::peer::NO_CLIENT_ADDRESS;
use crate::reason::ReasonInfo;

/// The listener's admission point: connections, the refusals it makes before the limiter can
/// decide, and the deadlines it closes connections for.
static POINT: AdmissionPoint = AdmissionPoint::connections("listener")
    .refusing(&REFUSALS)
    .closing(&deadlines::CLOSES);

#[cfg(feature = "proxy-protocol")]
static REFUSALS: [&ReasonInfo; 4] = [
    &NO_CLIENT_ADDRESS,
    &proxy_protocol::PROXY_UNTRUSTED,
    &proxy_protocol::PROXY_HEADER_INVALID,
    &proxy_protocol::PROXY_HEADER_TIMEOUT,
];
#[cfg(not(feature = "proxy-protocol"))]
static REFUSALS: [&ReasonInfo; 1] = [&NO_CLIENT_ADDRESS];

pin_project_lite::pin_project! {
    /// A listener that admits connections through a [`Limiter`]. See the [module docs](self).
    ///
    /// The wrapper owns the inner listener, or the inner stream of accepted connections; the
    /// limiter is shared, so the same limits and counts can also be enforced by layers elsewhere
    /// in the server.
    pub struct ConnLimitListener<L: Accept> {
        #[pin]
        inner: L,
        path: AcceptPath<L::Io>,
    }
}

impl<L> ConnLimitListener<L>
where
    L: Accept,
    L::Io: RejectableIo,
{
    /// Wraps `inner`, admitting its connections through `limiter`.
    pub fn new(inner: L, limiter: Limiter) -> Self {
        ConnLimitListener {
            path: AcceptPath::new(&limiter),
            inner,
        }
    }

    /// How to refuse a connection over the limit; [`RejectAction::Close`] by default.
    pub fn reject_with(mut self, action: RejectAction) -> Self {
        self.path.rejector.action = action;
        self
    }

    /// How long a [`RejectAction::HttpResponse`] refusal may take to write its answer and see the
    /// client close, before the connection is dropped regardless. Default 2 seconds.
    pub fn reject_deadline(mut self, deadline: Duration) -> Self {
        self.path.rejector.deadline = deadline;
        self
    }

    /// How many [`RejectAction::HttpResponse`] refusals may be in progress at once; past that,
    /// refusals just close. Default 64.
    pub fn max_pending_rejections(mut self, max: usize) -> Self {
        self.path.rejector.max_pending = max;
        self
    }

    /// How many PROXY headers (see [`ListenerConfig::proxy_protocol`]) may be read at once.
    /// Past that, the oldest read is abandoned and its connection closed, counted as a
    /// `proxy_header_timeout` refusal: the oldest is the likeliest to be a silent peer (AWS NLB,
    /// for one, sends the header only with the client's first bytes), so a flood of silent
    /// connections only pushes out its own while honest headers, which arrive at once, keep
    /// getting through. Default 1024; at least 1.
    #[cfg(feature = "proxy-protocol")]
    pub fn max_pending_proxy_headers(mut self, max: usize) -> Self {
        self.path.max_pending_headers = max.max(1);
        self
    }

    /// The limiter this listener admits through.
    pub fn limiter(&self) -> &Limiter {
        self.path.limiter()
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
}

impl<L> ConnLimitListener<L>
where
    L: Accept,
    L::Io: RejectableIo,
    L::Addr: PeerAddr,
{
    /// Accepts the next connection that is under the limits, refusing the others as configured:
    /// [`Accept::accept`], callable without the trait in scope. The address returned is the
    /// client's: the peer's, or with [`ProxyProtocol::Required`] the one its PROXY header names.
    ///
    /// # Errors
    ///
    /// The inner listener's accept error, as it returns it (for example `EMFILE` when out of
    /// file descriptors); the caller decides whether to back off and retry.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe when the inner listener's `accept` is, as tokio's are: a connection is either
    /// returned or, if it was refused, already dealt with.
    pub async fn accept(&mut self) -> io::Result<(TrackedIo<L::Io>, SocketAddr)> {
        Accept::accept(self).await
    }

    /// The address the inner listener is bound to, as its peers are counted: for a Unix socket,
    /// `127.0.0.1:0` (see [`PeerAddr`]); its path is `get_ref().local_addr()`.
    ///
    /// # Errors
    ///
    /// The inner listener's.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Accept::local_addr(self)
    }
}

/// The one accept loop: every form of the listener but the stream of connections (whose
/// `poll_next` walks the same path, `incoming.rs`) admits here.
impl<L> Accept for ConnLimitListener<L>
where
    L: Accept,
    L::Io: RejectableIo,
    L::Addr: PeerAddr,
{
    type Io = TrackedIo<L::Io>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> io::Result<(Self::Io, Self::Addr)> {
        loop {
            let ConnLimitListener { inner, path } = &mut *self;
            let accepted = async {
                let (io, addr) = inner.accept().await?;
                Ok((io, addr.peer_addr()))
            };
            match path.arrive(path.next(accepted).await) {
                Outcome::Wait => {}
                Outcome::Admitted(io, client) => return Ok((io, client)),
                Outcome::Failed(error) => return Err(error),
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        let addr = self.inner.local_addr()?;
        addr.peer_addr()
            .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "no IP address"))
    }

    fn permit(io: &Self::Io) -> Option<&crate::ConnPermit> {
        Some(io.permit())
    }
}

impl<L: Accept + fmt::Debug> fmt::Debug for ConnLimitListener<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnLimitListener")
            .field("inner", &self.inner)
            .field("reject_with", &self.path.rejector.action)
            .finish_non_exhaustive()
    }
}
