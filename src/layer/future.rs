//! Futures returned by [`ConnLimit`](crate::ConnLimit) and
//! [`LimitedConnection`].

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

use super::body::ResponseBody;
use super::connection::LimitedConnection;
use super::response::{Asked, Refusal};
use crate::{ConnPermit, RequestPermit};

pin_project! {
    /// Response future of the request-level services: the inner service's future, or an
    /// immediate refusal that never called the inner service.
    pub struct ResponseFuture<F> {
        #[pin]
        state: ResponseState<F>,
    }
}

pin_project! {
    #[project = ResponseStateProj]
    enum ResponseState<F> {
        Called { #[pin] fut: F, permit: Option<RequestPermit> },
        Refused { refusal: Refusal, asked: Asked, close_connection: bool },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn called(fut: F, permit: Option<RequestPermit>) -> Self {
        ResponseFuture {
            state: ResponseState::Called { fut, permit },
        }
    }

    pub(crate) fn refused(refusal: Refusal, asked: Asked, close_connection: bool) -> Self {
        ResponseFuture {
            state: ResponseState::Refused {
                refusal,
                asked,
                close_connection,
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            ResponseStateProj::Called { fut, permit } => {
                let result = ready!(fut.poll(cx));
                // On success the permit moves into the body; on error it drops here.
                let permit = permit.take();
                Poll::Ready(
                    result.map(|response| response.map(|body| ResponseBody::new(body, permit))),
                )
            }
            ResponseStateProj::Refused {
                refusal,
                asked,
                close_connection,
            } => Poll::Ready(Ok(refusal.response(
                ResponseBody::from,
                *asked,
                *close_connection,
            ))),
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
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
        Refused { refusal: Refusal, asked: Asked },
    }
}

impl<F> ConnectionFuture<F> {
    pub(crate) fn called(fut: F) -> Self {
        ConnectionFuture {
            state: ConnectionState::Called { fut },
        }
    }

    pub(crate) fn refused(refusal: Refusal, asked: Asked) -> Self {
        ConnectionFuture {
            state: ConnectionState::Refused { refusal, asked },
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
            ConnectionStateProj::Refused { refusal, asked } => {
                Poll::Ready(Ok(refusal.response(B::from, *asked, true)))
            }
        }
    }
}

impl<F> std::fmt::Debug for ConnectionFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionFuture").finish_non_exhaustive()
    }
}

pin_project! {
    /// Future of the make-service level: resolves to the per-connection
    /// [`LimitedConnection`], admitted (holding the connection's permit) or refusing.
    pub struct MakeFuture<F> {
        #[pin]
        state: MakeState<F>,
    }
}

pin_project! {
    #[project = MakeStateProj]
    enum MakeState<F> {
        Admitted { #[pin] fut: F, admission: Option<(ConnPermit, SocketAddr)> },
        Refused { refusal: Refusal },
    }
}

impl<F> MakeFuture<F> {
    pub(crate) fn admitted(fut: F, permit: ConnPermit, peer: SocketAddr) -> Self {
        MakeFuture {
            state: MakeState::Admitted {
                fut,
                admission: Some((permit, peer)),
            },
        }
    }

    pub(crate) fn refused(refusal: Refusal) -> Self {
        MakeFuture {
            state: MakeState::Refused { refusal },
        }
    }
}

impl<F, S, E> Future for MakeFuture<F>
where
    F: Future<Output = Result<S, E>>,
{
    type Output = Result<LimitedConnection<S>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            MakeStateProj::Admitted { fut, admission } => {
                let service = ready!(fut.poll(cx))?;
                let (permit, peer) = admission
                    .take()
                    .expect("MakeFuture polled after completion");
                Poll::Ready(Ok(LimitedConnection::admitted(
                    service,
                    Arc::new(permit),
                    peer,
                )))
            }
            MakeStateProj::Refused { refusal } => {
                Poll::Ready(Ok(LimitedConnection::refused(*refusal)))
            }
        }
    }
}

impl<F> std::fmt::Debug for MakeFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MakeFuture").finish_non_exhaustive()
    }
}
