//! [`ResponseBody`]: keeps a request counted until its response has been sent.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::limiter::RequestPermit;

pin_project! {
    /// The response body of a [`ConnLimit`](crate::layer::ConnLimit) service: the inner service's body,
    /// or a short static refusal text.
    ///
    /// For a request admitted by the request-level layer, the body holds the request's
    /// [`RequestPermit`] and drops it when the body ends, fails or is dropped, so a streaming
    /// response (server-sent events, a large download) counts as in flight until it is done.
    pub struct ResponseBody<B> {
        #[pin]
        contents: Contents<B>,
        permit: Option<RequestPermit>,
    }
}

pin_project! {
    #[project = ContentsProj]
    enum Contents<B> {
        Inner { #[pin] body: B },
        Refusal { text: Option<&'static str> },
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn new(body: B, permit: Option<RequestPermit>) -> Self {
        ResponseBody {
            contents: Contents::Inner { body },
            permit,
        }
    }
}

impl<B> From<&'static str> for ResponseBody<B> {
    /// A body of static text: how refusals are answered, and what lets a request-limited
    /// service sit inside a make-service-level limit. An empty text is an empty body, ended
    /// from the start, so a gRPC refusal goes out as one trailers-only HEADERS frame.
    fn from(text: &'static str) -> Self {
        ResponseBody {
            contents: Contents::Refusal {
                text: (!text.is_empty()).then_some(text),
            },
            permit: None,
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body,
    B::Data: From<Bytes>,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        match this.contents.project() {
            ContentsProj::Inner { body } => {
                let frame = ready!(body.poll_frame(cx));
                if !matches!(frame, Some(Ok(_))) {
                    // The body ended or failed: the request is no longer in flight.
                    this.permit.take();
                }
                Poll::Ready(frame)
            }
            ContentsProj::Refusal { text } => Poll::Ready(
                text.take()
                    .map(|text| Ok(Frame::data(Bytes::from_static(text.as_bytes()).into()))),
            ),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.contents {
            Contents::Inner { body } => body.is_end_stream(),
            Contents::Refusal { text } => text.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.contents {
            Contents::Inner { body } => body.size_hint(),
            Contents::Refusal { text } => SizeHint::with_exact(text.map_or(0, |t| t.len() as u64)),
        }
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let contents = match &self.contents {
            Contents::Inner { .. } => "inner",
            Contents::Refusal { .. } => "refusal",
        };
        f.debug_struct("ResponseBody")
            .field("contents", &contents)
            .field("counted", &self.permit.is_some())
            .finish()
    }
}
