//! [`ConnLimit`]: the service the layer builds, at either level.

use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::future::{MakeFuture, ResponseFuture};
use super::response::{Asked, Refusal};
use super::{LimitedConnection, ResponseBody};
use crate::addr::{client_addr_of, report_missing_address, request_client_ip};
use crate::limiter::Kind;
use crate::{AdmissionPoint, Limiter, PeerAddr};

/// Limits connections or requests per client; built by [`ConnLimitLayer`](crate::ConnLimitLayer).
///
/// What it counts depends on what it wraps (see the [layer docs](crate::layer)):
///
/// - around a **make-service** (a `Service` whose target implements [`PeerAddr`], such as axum's
///   `IncomingStream` or a `SocketAddr`), each call admits a *connection* and yields a
///   [`LimitedConnection`];
/// - around a **request service** (`Service<http::Request<B>>`), each call admits a *request*
///   against `max_requests_per_client`, and the answer's [`ResponseBody`] keeps it counted.
///
/// Decisions happen in `call`, where the client is known; `poll_ready` only forwards.
#[derive(Clone, Debug)]
pub struct ConnLimit<S> {
    inner: S,
    limiter: Limiter,
}

impl<S> ConnLimit<S> {
    /// Wraps `inner`, admitting through `limiter`.
    pub fn new(inner: S, limiter: Limiter) -> Self {
        ConnLimit { inner, limiter }
    }

    /// The limiter this service admits through.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// Make-service level: the target names the peer; admit a connection.
impl<S, Target> Service<Target> for ConnLimit<S>
where
    S: Service<Target>,
    Target: PeerAddr,
{
    type Response = LimitedConnection<S::Response>;
    type Error = S::Error;
    type Future = MakeFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, target: Target) -> Self::Future {
        let Some(peer) = target.peer_addr() else {
            report_missing_address(
                &self.limiter,
                Kind::Connection,
                AdmissionPoint::MakeService,
                MAKE_SERVICE_FIX,
            );
            return MakeFuture::refused(Refusal::NoClientAddress);
        };
        match self
            .limiter
            .try_acquire_at(peer.ip(), AdmissionPoint::MakeService)
        {
            Ok(permit) => MakeFuture::admitted(self.inner.call(target), permit, peer),
            Err(rejected) => MakeFuture::refused(Refusal::Limit(rejected)),
        }
    }
}

/// Request level: the request's extensions name the peer; admit a request.
impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ConnLimit<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let Some(peer) = client_addr_of(request.extensions()) else {
            report_missing_address(
                &self.limiter,
                Kind::Request,
                AdmissionPoint::RequestLayer,
                REQUEST_FIX,
            );
            return ResponseFuture::refused(Refusal::NoClientAddress, Asked::by(&request), false);
        };
        let client = request_client_ip(&self.limiter, peer.ip(), request.headers());
        let admitted = self.limiter.try_acquire_request_at(
            client,
            request.method(),
            request.uri().path(),
            AdmissionPoint::RequestLayer,
        );
        match admitted {
            Ok(permit) => ResponseFuture::called(self.inner.call(request), Some(permit)),
            Err(rejected) => {
                ResponseFuture::refused(Refusal::Limit(rejected), Asked::by(&request), false)
            }
        }
    }
}

const MAKE_SERVICE_FIX: &str = "tower-connlimit cannot tell who the client is, so it refused \
    the connection. Fix: implement `PeerAddr` for the make-service target so it returns the peer";

const REQUEST_FIX: &str = "tower-connlimit cannot tell who the client is, so it refused with 500. \
    Fix: serve the router with `into_make_service_with_connect_info::<SocketAddr>()`, \
    or put ConnLimitLayer around the make-service, or insert a `tower_connlimit::ClientAddr` \
    (or `SocketAddr`) request extension in a custom server. With tonic, enable the `tonic` \
    feature (and `tonic-tls` when TLS is terminated in the incoming stream)";
