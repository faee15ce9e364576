//! [`LimitedConnection`]: the per-connection service the connection level hands to the server.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::client::ClientAddr;
use super::refusal::{Refusal, RequestShape};
use crate::limiter::ConnPermit;

/// The per-connection service produced by a [`ConnLimit`](crate::layer::ConnLimit) around a
/// make-service.
///
/// *Admitted*: holds the connection's [`ConnPermit`] (shared by the clones the server makes per
/// request, released when the last one drops, i.e. when the connection ends), inserts a
/// [`ClientAddr`] into every request, and forwards to the inner service.
///
/// *Refused*: answers every request (with the inner body type, built `From<&'static str>`)
/// with the refusal (`429 Too Many Requests` for a per-client limit, `503 Service Unavailable`
/// when the server as a whole is full) and `Connection: close`, without calling the inner
/// service, so an HTTP/1 connection ends after one response. See the
/// [layer docs](crate::layer) for what this level cannot do (close HTTP/2, count upgrades).
pub struct LimitedConnection<S> {
    state: State<S>,
}

enum State<S> {
    Admitted {
        inner: S,
        permit: Arc<ConnPermit>,
        peer: SocketAddr,
    },
    Refused(Refusal),
}

impl<S> LimitedConnection<S> {
    pub(super) fn admitted(inner: S, permit: Arc<ConnPermit>, peer: SocketAddr) -> Self {
        LimitedConnection {
            state: State::Admitted {
                inner,
                permit,
                peer,
            },
        }
    }

    pub(super) fn refused(refusal: Refusal) -> Self {
        LimitedConnection {
            state: State::Refused(refusal),
        }
    }

    /// Whether this connection was admitted (and is counted).
    pub fn is_admitted(&self) -> bool {
        matches!(self.state, State::Admitted { .. })
    }

    /// The inner per-connection service, when admitted.
    pub fn get_ref(&self) -> Option<&S> {
        match &self.state {
            State::Admitted { inner, .. } => Some(inner),
            State::Refused(_) => None,
        }
    }

    /// The inner per-connection service, mutably, when admitted.
    pub fn get_mut(&mut self) -> Option<&mut S> {
        match &mut self.state {
            State::Admitted { inner, .. } => Some(inner),
            State::Refused(_) => None,
        }
    }
}

impl<S: Clone> Clone for LimitedConnection<S> {
    fn clone(&self) -> Self {
        let state = match &self.state {
            State::Admitted {
                inner,
                permit,
                peer,
            } => State::Admitted {
                inner: inner.clone(),
                permit: Arc::clone(permit),
                peer: *peer,
            },
            State::Refused(refusal) => State::Refused(*refusal),
        };
        LimitedConnection { state }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for LimitedConnection<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<&'static str>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ConnectionFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match &mut self.state {
            State::Admitted { inner, .. } => inner.poll_ready(cx),
            State::Refused(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        match &mut self.state {
            State::Admitted { inner, peer, .. } => {
                request.extensions_mut().insert(ClientAddr(*peer));
                ConnectionFuture::called(inner.call(request))
            }
            State::Refused(refusal) => {
                ConnectionFuture::refused(*refusal, RequestShape::of(&request))
            }
        }
    }
}

impl<S> fmt::Debug for LimitedConnection<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            State::Admitted { permit, peer, .. } => f
                .debug_struct("LimitedConnection")
                .field("peer", peer)
                .field("client", &permit.client_key())
                .finish_non_exhaustive(),
            State::Refused(refusal) => f
                .debug_struct("LimitedConnection")
                .field("refused", refusal)
                .finish(),
        }
    }
}

pin_project! {
    /// Response future of an [`LimitedConnection`]: the inner service's response, untouched, or
    /// the refusal of an over-limit connection.
    ///
    /// The body type stays the inner one (servers such as `axum::serve` require exactly
    /// `Response<Body>` here); the refusal's text becomes a body through `From<&'static str>`.
    pub struct ConnectionFuture<F> {
        #[pin]
        state: ConnectionState<F>,
    }
}

pin_project! {
    #[project = ConnectionStateProj]
    enum ConnectionState<F> {
        Called { #[pin] fut: F },
        Refused { refusal: Refusal, shape: RequestShape },
    }
}

impl<F> ConnectionFuture<F> {
    fn called(fut: F) -> Self {
        ConnectionFuture {
            state: ConnectionState::Called { fut },
        }
    }

    fn refused(refusal: Refusal, shape: RequestShape) -> Self {
        ConnectionFuture {
            state: ConnectionState::Refused { refusal, shape },
        }
    }
}

impl<F, B, E> Future for ConnectionFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: From<&'static str>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            ConnectionStateProj::Called { fut } => fut.poll(cx),
            ConnectionStateProj::Refused { refusal, shape } => {
                Poll::Ready(Ok(refusal.response(B::from, *shape, true)))
            }
        }
    }
}

impl<F> std::fmt::Debug for ConnectionFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionFuture").finish_non_exhaustive()
    }
}
