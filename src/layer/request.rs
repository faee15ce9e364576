//! The request level: [`ConnLimit`] around a request service counts each request in flight.
//!
//! Each call is a request: its client is found (see `client.rs`), admitted against a ban, the
//! request rates, the path rules and `max_requests_per_client`, and the permit moves into the
//! response body, which keeps the request counted until it has been sent.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::body::ResponseBody;
use super::client::{client_of, peer_of, ClientIp, RequestClient};
use super::conn_limit_layer::ConnLimit;
use super::key_source::KeySource;
use super::refusal::{Refusal, RequestShape};
use super::CLIENT_UNIDENTIFIED;
use crate::client_ip::Unidentified;
use crate::keys::RequestKey;
use crate::limiter::Kind;
use crate::limiter::{Checkpoint, RequestPermit};
use crate::peer::{refuse_without_address, NO_CLIENT_ADDRESS};
use crate::rate::Quota;

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
        admit_request(&mut self.inner, &self.request, &self.options, request)
    }
}

/// How the request level admits, beyond the limiter's config: set on the layer.
#[derive(Clone, Debug, Default)]
pub(crate) struct RequestOptions {
    /// Where a request's key is found; none: every request is keyed by its address.
    pub(crate) keys: Option<KeySource>,
    /// Whether responses carry the `RateLimit-Policy` and `RateLimit` fields.
    pub(crate) ratelimit_headers: bool,
}

/// Admits `request` at `checkpoint` (under the key the options find in it, if any) and calls
/// `inner` with it, or answers the refusal.
fn admit_request<S, ReqBody, ResBody>(
    inner: &mut S,
    checkpoint: &Checkpoint,
    options: &RequestOptions,
    mut request: Request<ReqBody>,
) -> ResponseFuture<S::Future>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    let Some(peer) = peer_of(request.extensions()) else {
        refuse_without_address(checkpoint, Kind::Request, FIX);
        let refusal = Refusal::new(&NO_CLIENT_ADDRESS, None);
        return ResponseFuture::refused(refusal, RequestShape::of(&request));
    };
    let RequestClient { ip, unidentified } =
        client_of(checkpoint.limiter(), peer.ip(), request.headers());
    if let Some(unidentified) = unidentified {
        let refuse = unidentified == Unidentified::Refuse;
        checkpoint.note_unidentified(ip, refuse);
        if refuse {
            checkpoint.refuse(Kind::Request, &CLIENT_UNIDENTIFIED, Some(ip));
            let refusal = Refusal::new(&CLIENT_UNIDENTIFIED, None);
            return ResponseFuture::refused(refusal, RequestShape::of(&request));
        }
    }
    let key = match &options.keys {
        Some(keys) => {
            let (key, same) = key_of(keys, request);
            request = same;
            key
        }
        None => None,
    };
    let (method, path) = (request.method().as_str(), request.uri().path());
    let admitted = match &key {
        Some(key) => checkpoint.try_acquire_request_as(ip, key, method, path),
        None => checkpoint.try_acquire_request_to(ip, method, path),
    };
    // What is left after this request's admission (or refusal), for the headers.
    let quota = options.ratelimit_headers.then(|| {
        Box::new(
            checkpoint
                .limiter()
                .check_request(ip, key.as_ref(), method, path),
        )
    });
    let future = match admitted {
        Ok(permit) => {
            request.extensions_mut().insert(ClientIp(ip));
            ResponseFuture::called(inner.call(request), Some(permit))
        }
        Err(rejected) => {
            ResponseFuture::refused(Refusal::from(rejected), RequestShape::of(&request))
        }
    };
    future.with_quota(quota)
}

/// The key `keys` finds in `request`'s head, and the request.
fn key_of<B>(keys: &KeySource, request: Request<B>) -> (Option<RequestKey>, Request<B>) {
    // The head is lent out by taking the request apart and putting it back together: moves.
    let (head, body) = request.into_parts();
    let key = keys.find(&head);
    (key, Request::from_parts(head, body))
}

const FIX: &str = "tower-connlimit cannot tell who the client is, so it refused with 500. \
    Fix: serve the router with `into_make_service_with_connect_info::<SocketAddr>()`, \
    or put ConnLimitLayer around the make-service, or insert a `tower_connlimit::layer::ClientAddr` \
    (or `SocketAddr`) request extension in a custom server. With tonic, enable the `tonic` \
    feature (and `tonic-tls` when TLS is terminated in the incoming stream)";

pin_project! {
    /// Response future of the request-level services: the inner service's future, or an
    /// immediate refusal that never called the inner service.
    pub struct ResponseFuture<F> {
        #[pin]
        state: ResponseState<F>,
        // What the `RateLimit` fields tell, when the layer sends them.
        quota: Option<Box<Quota>>,
    }
}

pin_project! {
    #[project = ResponseStateProj]
    enum ResponseState<F> {
        Called { #[pin] fut: F, permit: Option<RequestPermit> },
        Refused { refusal: Refusal, shape: RequestShape },
    }
}

impl<F> ResponseFuture<F> {
    fn called(fut: F, permit: Option<RequestPermit>) -> Self {
        ResponseFuture {
            state: ResponseState::Called { fut, permit },
            quota: None,
        }
    }

    fn refused(refusal: Refusal, shape: RequestShape) -> Self {
        ResponseFuture {
            state: ResponseState::Refused { refusal, shape },
            quota: None,
        }
    }

    fn with_quota(mut self, quota: Option<Box<Quota>>) -> Self {
        self.quota = quota;
        self
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let quota = this.quota;
        let mut response = match this.state.project() {
            ResponseStateProj::Called { fut, permit } => {
                let result = ready!(fut.poll(cx));
                // On success the permit moves into the body; on error it drops here.
                let permit = permit.take();
                match result {
                    Ok(response) => response.map(|body| ResponseBody::new(body, permit)),
                    Err(error) => return Poll::Ready(Err(error)),
                }
            }
            // The connection stays open for the client's other requests.
            ResponseStateProj::Refused { refusal, shape } => {
                refusal.response(ResponseBody::from, *shape, false)
            }
        };
        if let Some(quota) = quota.take() {
            super::ratelimit_headers::insert(response.headers_mut(), &quota);
        }
        Poll::Ready(Ok(response))
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
