//! [`Serve`]: serving an axum or tower app from a [`ConnLimitListener`](crate::ConnLimitListener) with every request
//! bounded, not only the first (feature `serve`).
//!
//! `axum::serve` is a quick start, but it never arms hyper's header-read timeout, so a client
//! that trickles its second request's headers on a kept-alive connection, or an HTTP/2 stream's
//! HEADERS frame, holds its connection (and its place under the connection limits) for as long
//! as it likes; the listener's deadlines cover a connection's first phase only. `Serve` runs the
//! same app on hyper-util's server, HTTP/1.1 and HTTP/2 (h2c) on one port, with:
//!
//! - **a header timeout on every HTTP/1 request** (hyper's `header_read_timeout`): each
//!   request's headers must arrive within it, counted from when the server is ready to read
//!   them, so it also closes a kept-alive connection idle that long (nginx's
//!   `client_header_timeout`, HAProxy's `timeout http-request`);
//! - **the same for every HTTP/2 header block**: a HEADERS frame and its CONTINUATIONs must
//!   arrive within the timeout of their first byte (Envoy's `request_headers_timeout`);
//! - **bounded HTTP/2 streams**: at most [`max_concurrent_streams`](Serve::max_concurrent_streams)
//!   per connection, and keep-alive pings that close a connection whose peer stopped answering;
//! - **graceful shutdown**: [`Serve::run_until`] stops accepting when its signal fires, lets
//!   open requests finish, and closes what is left after a drain deadline;
//! - **fair share's reclaim**: with [`FairShare::reclaim`](crate::config::FairShare::reclaim)
//!   in force when a connection is accepted, the connection gives itself back when its client is
//!   asked to (it holds more than its fair share, and a client under its share found the budget
//!   full) and it has no request in flight: an HTTP/1 connection is closed, an HTTP/2 one sent a
//!   graceful `GOAWAY`. A request that starts at that moment is finished first, as at shutdown.
//!
//! Every request carries the peer as a [`ClientAddr`] extension (and axum's `ConnectInfo`), so
//! a request-level [`ConnLimitLayer`](crate::ConnLimitLayer) and handlers find the client.
//! Upgrades (WebSockets) work; the upgraded stream keeps its connection's permit.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//! use tower_connlimit::{serve::Serve, Config, ConnLimitLayer, ConnLimitListener, Limiter};
//!
//! let limiter = Limiter::new(Config::default());
//! let app = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(ConnLimitLayer::with_limiter(limiter.clone()));
//! let tcp = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! Serve::new(ConnLimitListener::new(tcp, limiter), app)
//!     .header_timeout(Duration::from_secs(10))
//!     .run_until(async { tokio::signal::ctrl_c().await.unwrap() })
//!     .await
//! # }
//! ```

mod header_blocks;
mod reclaim;

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tower_service::Service;

use self::header_blocks::HeaderDeadline;
use self::reclaim::{ConnState, InFlightBody};
use crate::layer::ClientAddr;
use crate::limiter::ConnPermit;
use crate::listener::{Accept, HEADER_TIMEOUT};
use crate::peer::PeerAddr;
use std::sync::Arc;

/// The defaults: nginx's `client_header_timeout` is 60 s, HAProxy's documentation suggests a
/// few seconds; 10 s lets a slow mobile client through and cuts a trickle short.
const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// hyper's default for HTTP/2 is 200; Envoy's and Go's 100, and nginx's 128.
const MAX_CONCURRENT_STREAMS: u32 = 100;
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);
/// How long accepting pauses after an accept error (out of file descriptors, say).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves an app from an [`Accept`] listener (a [`ConnLimitListener`](crate::ConnLimitListener), or TLS on top of one, or a bare
/// listener for a server with no connection limits), every request bounded: see the
/// [module docs](self).
#[derive(Debug)]
pub struct Serve<L, S> {
    listener: L,
    app: S,
    header_timeout: Duration,
    max_concurrent_streams: u32,
    keep_alive: Option<(Duration, Duration)>,
    drain_deadline: Duration,
}

impl<L: Accept, S> Serve<L, S> {
    /// Serves `app` (an axum `Router`, or any `Clone` tower service of `http::Request`s) on
    /// the connections `listener` accepts.
    pub fn new(listener: L, app: S) -> Self {
        Serve {
            listener,
            app,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_concurrent_streams: MAX_CONCURRENT_STREAMS,
            keep_alive: Some((KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT)),
            drain_deadline: DRAIN_DEADLINE,
        }
    }

    /// How long a request's headers may take to arrive, for every HTTP/1 request and every
    /// HTTP/2 header block. Default 10 s. At least 1 ms.
    pub fn header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The most HTTP/2 streams one connection may have open at once. Default 100.
    pub fn max_concurrent_streams(mut self, streams: u32) -> Self {
        self.max_concurrent_streams = streams;
        self
    }

    /// HTTP/2 keep-alive: a ping after `interval` without a frame, and the connection closed if
    /// it is not answered within `timeout`. Default 20 s and 20 s; `None` sends no pings.
    pub fn keep_alive(mut self, interval_and_timeout: Option<(Duration, Duration)>) -> Self {
        self.keep_alive = interval_and_timeout;
        self
    }

    /// How long [`Serve::run_until`] waits for open connections after its signal, before it
    /// closes them. Default 10 s.
    pub fn drain_deadline(mut self, deadline: Duration) -> Self {
        self.drain_deadline = deadline;
        self
    }

    /// The address the listener is bound to.
    ///
    /// # Errors
    ///
    /// The listener's.
    pub fn local_addr(&self) -> io::Result<L::Addr> {
        self.listener.local_addr()
    }

    fn builder(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout);
        let mut http2 = builder.http2();
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.max_concurrent_streams);
        if let Some((interval, timeout)) = self.keep_alive {
            http2
                .keep_alive_interval(interval)
                .keep_alive_timeout(timeout);
        }
        builder
    }
}

impl<L, S, B> Serve<L, S>
where
    L: Accept,
    L::Addr: PeerAddr,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Serves until the process ends.
    ///
    /// # Errors
    ///
    /// None in practice: accept errors (out of file descriptors, say) are logged, and accepting
    /// resumes after a short pause.
    pub async fn run(self) -> io::Result<()> {
        self.run_until(std::future::pending()).await
    }

    /// Serves until `signal` completes, then stops accepting, lets the open connections finish
    /// their requests for up to the drain deadline, and closes the rest.
    ///
    /// # Errors
    ///
    /// As [`Serve::run`].
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> io::Result<()> {
        let builder = self.builder();
        // Each connection's task holds a receiver: a send asks them all to close gracefully,
        // and the channel closes when the last one has ended.
        let (stop, _) = tokio::sync::watch::channel(());
        let mut signal = std::pin::pin!(signal);
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                () = &mut signal => break,
            };
            let (io, peer) = match accepted {
                Ok((io, addr)) => (io, addr.peer_addr()),
                Err(err) => {
                    tracing::warn!(%err, "accept failed; pausing before the next accept");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let permit = L::permit(&io);
            let cuts = permit.map(ConnPermit::close_counter);
            let state = permit
                .and_then(ConnPermit::giveback)
                .map(|giveback| Arc::new(ConnState::new(giveback)));
            let io = TokioIo::new(HeaderDeadline::new(io, self.header_timeout, cuts.clone()));
            let service = WithPeer {
                app: self.app.clone(),
                peer,
                state: state.clone(),
            };
            let connection = builder
                .serve_connection_with_upgrades(io, service)
                .into_owned();
            let mut stopping = stop.subscribe();
            tokio::spawn(async move {
                let mut connection = std::pin::pin!(connection);
                let mut closing = false;
                let given_back = async {
                    match &state {
                        Some(state) => state.given_back().await,
                        None => std::future::pending().await,
                    }
                };
                let mut given_back = std::pin::pin!(given_back);
                let ended = loop {
                    tokio::select! {
                        ended = connection.as_mut() => break ended,
                        _ = stopping.changed(), if !closing => {
                            closing = true;
                            connection.as_mut().graceful_shutdown();
                        }
                        cause = given_back.as_mut(), if !closing => {
                            closing = true;
                            if let Some(cuts) = &cuts {
                                cuts.count(cause);
                            }
                            connection.as_mut().graceful_shutdown();
                        }
                    }
                };
                if let Err(err) = ended {
                    if let (Some(cuts), true) = (&cuts, is_header_timeout(&*err)) {
                        cuts.count(HEADER_TIMEOUT);
                    }
                    tracing::debug!(?peer, %err, "connection ended with an error");
                }
                drop(stopping);
            });
        }
        tracing::info!("stopped accepting; draining open connections");
        let _ = stop.send(());
        tokio::select! {
            () = stop.closed() => tracing::info!("every connection closed"),
            () = tokio::time::sleep(self.drain_deadline) => {
                tracing::warn!("drain deadline passed; closing the remaining connections");
            }
        }
        Ok(())
    }
}

/// Whether a connection ended because hyper's HTTP/1 header read timeout passed. (An HTTP/2
/// header block's timeout is [`HeaderDeadline`]'s, which counts it itself.)
fn is_header_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    err.downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_timeout)
}

/// The app, for one connection: each request gets the peer in its extensions, when it has an
/// IP address; with fair share's reclaim, each request is counted in flight on the connection
/// until its response body ends.
#[derive(Clone)]
struct WithPeer<S> {
    app: S,
    peer: Option<SocketAddr>,
    state: Option<Arc<ConnState>>,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for WithPeer<S>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<InFlightBody<B>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let http2 = request.version() == http::Version::HTTP_2;
        let in_flight = self.state.as_ref().map(|state| state.start(http2));
        if let Some(peer) = self.peer {
            let extensions = request.extensions_mut();
            extensions.insert(ClientAddr(peer));
            #[cfg(feature = "axum")]
            extensions.insert(axum::extract::ConnectInfo(peer));
        }
        let mut app = self.app.clone();
        Box::pin(async move {
            poll_fn(|cx| app.poll_ready(cx)).await?;
            let response = app.call(request).await?;
            Ok(response.map(|body| InFlightBody::new(body, in_flight)))
        })
    }
}
