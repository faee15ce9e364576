//! The accept path: what happens to every connection the inner listener or stream accepts,
//! whichever form the listener is used in (tokio's `accept`, axum's `Listener`, a `Stream`).

use std::future::Future;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use super::deadlines::DeadlineSettings;
use super::reject::{RejectableIo, Rejector};
use super::settings::ListenerSettings;
use super::tracked_io::TrackedIo;
use super::POINT;
use crate::limiter::{Checkpoint, Kind, Limiter, Settings};
use crate::peer::refuse_without_address;

#[cfg(feature = "proxy-protocol")]
use super::header_reads::{HeaderRead, HeaderReads};
#[cfg(feature = "proxy-protocol")]
use super::proxy_protocol::{
    read_header, InvalidHeader, PROXY_HEADER_INVALID, PROXY_HEADER_TIMEOUT, PROXY_UNTRUSTED,
};

/// What an inner listener or stream produced: a connection with its peer's address (if it has
/// an IP peer), or an error. (A stream's end never gets here: its form ends there.)
pub(super) type Accepted<IO, E> = Result<(IO, Option<SocketAddr>), E>;

/// What came in: a connection from the inner listener or stream (or its error, or its end), or
/// a connection whose PROXY header has been read.
pub(super) enum Arrival<IO, E> {
    Accepted(Accepted<IO, E>),
    #[cfg(feature = "proxy-protocol")]
    Identified(HeaderRead<IO>),
}

/// What became of an arrival, for the form of the listener waiting on a connection.
pub(super) enum Outcome<IO, E> {
    /// Wait on: the connection was refused, or its PROXY header is being read.
    Wait,
    /// A connection under the limits, with its client's address.
    Admitted(TrackedIo<IO>, SocketAddr),
    /// The inner listener or stream failed.
    Failed(E),
}

impl<IO, E> From<Option<(TrackedIo<IO>, SocketAddr)>> for Outcome<IO, E> {
    fn from(admitted: Option<(TrackedIo<IO>, SocketAddr)>) -> Self {
        match admitted {
            Some((io, client)) => Outcome::Admitted(io, client),
            None => Outcome::Wait,
        }
    }
}

/// The state every form of the listener shares: where it admits, how it refuses, and the PROXY
/// headers being read.
pub(super) struct AcceptPath<IO> {
    checkpoint: Checkpoint,
    pub(super) rejector: Rejector,
    #[cfg(feature = "proxy-protocol")]
    header_reads: HeaderReads<IO>,
    #[cfg(feature = "proxy-protocol")]
    pub(super) max_pending_headers: usize,
    #[cfg(not(feature = "proxy-protocol"))]
    _io: std::marker::PhantomData<fn(IO)>,
}

impl<IO: RejectableIo> AcceptPath<IO> {
    pub(super) fn new(limiter: &Limiter) -> Self {
        AcceptPath {
            checkpoint: limiter.checkpoint(&POINT),
            rejector: Rejector::default(),
            #[cfg(feature = "proxy-protocol")]
            header_reads: HeaderReads::new(),
            #[cfg(feature = "proxy-protocol")]
            max_pending_headers: 1024,
            #[cfg(not(feature = "proxy-protocol"))]
            _io: std::marker::PhantomData,
        }
    }

    pub(super) fn limiter(&self) -> &Limiter {
        self.checkpoint.limiter()
    }

    /// The accept path: what happens to everything that comes in, whichever form the listener
    /// takes.
    pub(super) fn arrive<E>(&self, arrival: Arrival<IO, E>) -> Outcome<IO, E> {
        match arrival {
            Arrival::Accepted(Err(error)) => Outcome::Failed(error),
            Arrival::Accepted(Ok((io, peer))) => self.on_accept(io, peer).into(),
            #[cfg(feature = "proxy-protocol")]
            Arrival::Identified(read) => self.on_header(read).into(),
        }
    }

    /// The next arrival for a listener, shared or not: a finished PROXY header read, or what
    /// `accepted` yields, whichever comes first (header reads are looked at first). `accepted`
    /// must be cancel safe: a header read may win the race.
    pub(super) async fn next<E>(
        &self,
        accepted: impl Future<Output = Accepted<IO, E>>,
    ) -> Arrival<IO, E> {
        #[cfg(feature = "proxy-protocol")]
        {
            use std::future::poll_fn;
            use std::pin::pin;

            let (mut read, mut accepted) = (pin!(self.header_reads.next()), pin!(accepted));
            poll_fn(|cx| {
                if let Poll::Ready(read) = read.as_mut().poll(cx) {
                    return Poll::Ready(Arrival::Identified(read));
                }
                accepted.as_mut().poll(cx).map(Arrival::Accepted)
            })
            .await
        }
        #[cfg(not(feature = "proxy-protocol"))]
        {
            Arrival::Accepted(accepted.await)
        }
    }

    /// The next arrival for a stream, which owns its listener and polls: a finished PROXY
    /// header read first, then what `poll_inner` yields; `None` once the stream has ended.
    pub(super) fn poll_next<E>(
        &mut self,
        cx: &mut Context<'_>,
        poll_inner: impl FnOnce(&mut Context<'_>) -> Poll<Option<Accepted<IO, E>>>,
    ) -> Poll<Option<Arrival<IO, E>>> {
        #[cfg(feature = "proxy-protocol")]
        if let Poll::Ready(read) = self.header_reads.poll_next(cx) {
            return Poll::Ready(Some(Arrival::Identified(read)));
        }
        poll_inner(cx).map(|accepted| accepted.map(Arrival::Accepted))
    }

    /// Deals with a freshly accepted connection: admits it (returning it with its client's
    /// address), refuses it, or, when a PROXY header is expected, starts reading that. What to do
    /// is decided on one snapshot of the config.
    fn on_accept(&self, io: IO, peer: Option<SocketAddr>) -> Option<(TrackedIo<IO>, SocketAddr)> {
        let Some(peer) = peer else {
            refuse_without_address(&self.checkpoint, Kind::Connection, NO_PEER_FIX);
            return None;
        };
        #[cfg(feature = "proxy-protocol")]
        {
            let (deadlines, proxy) =
                self.limiter()
                    .with_settings(|settings: &ListenerSettings, limits| {
                        let trusted = || limits.is_trusted_proxy(peer.ip());
                        let proxy = settings.proxy_header_timeout.map(|t| (t, trusted()));
                        (settings.deadlines, proxy)
                    });
            match proxy {
                None => self.admit(io, peer, deadlines),
                Some((timeout, true)) => {
                    self.read_proxy_header(io, peer, timeout);
                    None
                }
                Some((_, false)) => {
                    // Anyone able to send a header could choose their own client address.
                    self.checkpoint
                        .refuse_connection(&PROXY_UNTRUSTED, Some(peer.ip()));
                    None
                }
            }
        }
        #[cfg(not(feature = "proxy-protocol"))]
        {
            let deadlines = self.deadlines();
            self.admit(io, peer, deadlines)
        }
    }

    /// The deadlines of the config in force.
    fn deadlines(&self) -> Option<DeadlineSettings> {
        self.limiter()
            .with_settings(|settings: &ListenerSettings, _| settings.deadlines)
    }

    /// Starts reading the PROXY header of a connection from the trusted proxy `proxy`.
    #[cfg(feature = "proxy-protocol")]
    fn read_proxy_header(&self, io: IO, proxy: SocketAddr, deadline: std::time::Duration) {
        let evicted = self
            .header_reads
            .start(self.max_pending_headers, async move {
                let mut io = io;
                let header = tokio::time::timeout(deadline, read_header(&mut io)).await;
                HeaderRead { io, proxy, header }
            });
        if evicted {
            // The oldest read's peer is not known here; its refusal is counted all the same.
            self.checkpoint
                .refuse_connection(&PROXY_HEADER_TIMEOUT, None);
        }
    }

    /// Admits (or refuses) a connection whose PROXY header read has finished.
    #[cfg(feature = "proxy-protocol")]
    fn on_header(&self, read: HeaderRead<IO>) -> Option<(TrackedIo<IO>, SocketAddr)> {
        let HeaderRead { io, proxy, header } = read;
        let reason = match header {
            Ok(Ok(source)) => return self.admit(io, source.unwrap_or(proxy), self.deadlines()),
            Ok(Err(InvalidHeader)) => &PROXY_HEADER_INVALID,
            Err(_elapsed) => &PROXY_HEADER_TIMEOUT,
        };
        self.checkpoint.refuse_connection(reason, Some(proxy.ip()));
        None
    }

    /// Counts `io` if `client` is under the limits, otherwise refuses it and returns `None`. An
    /// admitted connection is watched by `deadlines`, from the config the caller read.
    fn admit(
        &self,
        io: IO,
        client: SocketAddr,
        deadlines: Option<DeadlineSettings>,
    ) -> Option<(TrackedIo<IO>, SocketAddr)> {
        match self.checkpoint.try_acquire(client.ip()) {
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

const NO_PEER_FIX: &str = "ConnLimitListener refused a connection with no IP peer address: \
    wrap a listener whose connections have IP peers";
